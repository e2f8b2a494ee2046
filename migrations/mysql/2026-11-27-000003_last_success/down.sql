DROP INDEX deliveries_by_event ON deliveries;
ALTER TABLE webhooks DROP COLUMN last_success_at;
