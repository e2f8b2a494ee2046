-- The delivery log's channel filter had an index of its own, (webhook_id,
-- channel_id, created_at): its entries are scattered over every channel,
-- so a commit of deliveries over 1,000 channels wrote a page of it for
-- each. Without it S1 went from 15.8k to 19.3k deliveries/s and S2 from
-- 32.5k to 41.4k on SQLite; on MariaDB it was 9% of the database's time of
-- a round of 1,000 deliveries and their outcomes (docs/benchmarks.md,
-- session 8). The webhook's history index carries the channel instead:
-- new entries go at its end, and the filter is read from the index alone,
-- newest first, without touching the rows it skips. Its cost moves to the
-- filtered log, which now reads the webhook's history index until it has
-- its page, and all of it for the count: about 90 ms per million retained
-- deliveries of the webhook, measured on SQLite here.
DROP INDEX deliveries_by_webhook_channel;
DROP INDEX deliveries_by_webhook;
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, created_at, channel_id);
