DROP INDEX deliveries_by_event;
ALTER TABLE webhooks DROP COLUMN last_success_at;
