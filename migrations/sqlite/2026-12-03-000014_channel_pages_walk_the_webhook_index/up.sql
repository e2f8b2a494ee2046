-- Clipped channels are read on together, walking the webhook's pending
-- deliveries (deliveries_pending_by_webhook) and checking each row's
-- channel: one walk serves every clipped channel due a read. The channel
-- index cost an entry per delivery at insert and its removal at the
-- outcome, scattered over every channel of the commit, for pages that only
-- a channel holding 64 deliveries in memory reads.
DROP INDEX deliveries_pending_by_channel;
