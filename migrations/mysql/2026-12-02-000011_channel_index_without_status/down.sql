DROP INDEX deliveries_by_channel_seq ON deliveries;
CREATE INDEX deliveries_pending_by_channel ON deliveries (webhook_id, channel_id, status, seq);
