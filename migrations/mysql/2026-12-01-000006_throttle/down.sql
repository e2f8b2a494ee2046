ALTER TABLE webhooks DROP COLUMN rate_limit, DROP COLUMN max_concurrency;
