DROP INDEX deliveries_succeeded_by_created;
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
DROP INDEX deliveries_failed_by_webhook;
DROP INDEX deliveries_by_seq;
CREATE INDEX deliveries_by_seq ON deliveries (seq, webhook_id);
DROP INDEX deliveries_pending_by_channel;
CREATE INDEX deliveries_pending_by_channel ON deliveries (webhook_id, channel_id, status, seq);
DROP INDEX deliveries_pending_by_webhook;
CREATE INDEX deliveries_pending_by_webhook ON deliveries (webhook_id, status, seq);
