-- Per-webhook throttling: at most rate_limit deliveries per second (NULL:
-- unlimited) and max_concurrency requests in flight.
ALTER TABLE webhooks
    ADD COLUMN rate_limit INT NULL,
    ADD COLUMN max_concurrency INT NOT NULL DEFAULT 32;
