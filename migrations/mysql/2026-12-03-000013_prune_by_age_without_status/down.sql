DROP INDEX deliveries_by_created ON deliveries;
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
