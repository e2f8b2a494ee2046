-- The portal's delivery log filters one webhook's deliveries by channel,
-- newest first.
CREATE INDEX deliveries_by_webhook_channel ON deliveries (webhook_id, channel_id, created_at);
