-- A delivery actor reads on in one channel of one webhook, from where it
-- stopped holding that channel (a channel with more waiting than an actor
-- holds of it), in sequence order: a walk of this index.
CREATE INDEX deliveries_pending_by_channel ON deliveries (webhook_id, channel_id, status, seq);
