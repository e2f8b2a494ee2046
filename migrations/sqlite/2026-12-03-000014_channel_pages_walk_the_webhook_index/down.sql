CREATE INDEX deliveries_pending_by_channel ON deliveries (webhook_id, channel_id, seq) WHERE status = 'pending';
