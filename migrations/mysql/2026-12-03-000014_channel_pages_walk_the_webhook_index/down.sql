CREATE INDEX deliveries_by_channel_seq ON deliveries (webhook_id, channel_id, seq);
