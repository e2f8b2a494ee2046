-- A channel page reads on past the last delivery its actor holds of the
-- channel, and nothing past that point has been sent yet: the rows it walks
-- there are pending without the index saying so. With `status` in the key,
-- every success moved the delivery's entry from the pending to the
-- succeeded part of its channel, a write scattered over every channel of
-- the commit; without it, the entry is written once, at insert. Measured on
-- MariaDB here (docs/benchmarks.md, session 8): 10% of the database time
-- of a round of 1,000 deliveries and their outcomes.
DROP INDEX deliveries_pending_by_channel ON deliveries;
CREATE INDEX deliveries_by_channel_seq ON deliveries (webhook_id, channel_id, seq);
