DROP INDEX deliveries_by_webhook;
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, created_at);
CREATE INDEX deliveries_by_webhook_channel ON deliveries (webhook_id, channel_id, created_at);
