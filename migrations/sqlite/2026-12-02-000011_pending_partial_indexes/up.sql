-- The indexes that find pending work hold pending rows only. Most rows
-- are history; with them in, every success moved an entry from the
-- pending part to the succeeded part of each index, and in an index that
-- starts with the channel that meant one more page written per delivery per
-- channel (a commit of deliveries over 1,000 channels dirtied a page of
-- each): S1 fell from 8.6k to 4.7k deliveries/s over a 10 s run as those
-- indexes outgrew one page per channel. Partial, they stay as small as the
-- backlog, and a success only deletes. Their queries say
-- `status = 'pending'` as a literal, which is what lets SQLite use them.
DROP INDEX deliveries_pending_by_webhook;
CREATE INDEX deliveries_pending_by_webhook ON deliveries (webhook_id, seq) WHERE status = 'pending';
DROP INDEX deliveries_pending_by_channel;
CREATE INDEX deliveries_pending_by_channel ON deliveries (webhook_id, channel_id, seq) WHERE status = 'pending';
DROP INDEX deliveries_by_seq;
CREATE INDEX deliveries_by_seq ON deliveries (seq, webhook_id) WHERE status = 'pending';
-- Failed rows, for the health count and "retry what failed since": few,
-- where history is most of the table.
CREATE INDEX deliveries_failed_by_webhook ON deliveries (webhook_id, created_at) WHERE status = 'failed';
-- Pruning walks succeeded rows by age. (status, next_attempt_at) served it,
-- at the price of an entry moved on every attempt, and SQLite's planner
-- preferred it for the stretch of pending rows between two sequence
-- numbers, which it then read whole.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_succeeded_by_created ON deliveries (created_at) WHERE status = 'succeeded';
