-- The last success is kept on the webhook so that auto-disable does not
-- depend on how long delivery history is retained.
ALTER TABLE webhooks ADD COLUMN last_success_at BIGINT NULL;
-- Retention looks for events no delivery refers to.
CREATE INDEX deliveries_by_event ON deliveries (event_id);
