-- Clipped channels are read on together, walking the webhook's pending
-- deliveries (deliveries_pending_by_webhook) and checking each row's
-- channel: one walk serves every clipped channel due a read. The channel
-- index cost an entry per delivery at insert, scattered over every channel
-- of the commit: a third of the time of inserting 1,000 deliveries on
-- MariaDB here (docs/benchmarks.md, session 11), for pages that only a
-- channel holding 64 deliveries in memory reads.
DROP INDEX deliveries_by_channel_seq ON deliveries;
