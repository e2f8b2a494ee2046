-- See the MySQL migration of the same name for the why. SQLite runs one
-- instance, but the tables and the protocol are the same.
CREATE TABLE webhook_leases (
    webhook_id TEXT PRIMARY KEY NOT NULL,
    owner TEXT,
    epoch BIGINT NOT NULL,
    lease_until BIGINT
);
CREATE INDEX webhook_leases_until ON webhook_leases (lease_until);
CREATE INDEX webhook_leases_owner ON webhook_leases (owner);
INSERT INTO webhook_leases (webhook_id, owner, epoch, lease_until)
    SELECT id, NULL, 0, NULL FROM webhooks;

CREATE TABLE broker_instances (
    id TEXT PRIMARY KEY NOT NULL,
    alive_until BIGINT NOT NULL
);

CREATE TABLE event_sequence (
    id INTEGER PRIMARY KEY NOT NULL,
    seq BIGINT NOT NULL
);
ALTER TABLE events ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
UPDATE events SET seq = r.n
    FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY created_at, id) AS n FROM events) AS r
    WHERE events.id = r.id;
UPDATE deliveries SET seq = COALESCE((SELECT e.seq FROM events e WHERE e.id = deliveries.event_id), 0);
INSERT INTO event_sequence (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events;

DROP INDEX deliveries_by_lease_owner;
DROP INDEX deliveries_pending_by_webhook;
ALTER TABLE deliveries DROP COLUMN lease_owner;
ALTER TABLE deliveries DROP COLUMN lease_until;
CREATE INDEX deliveries_pending_by_webhook ON deliveries (webhook_id, status, seq);
CREATE INDEX deliveries_by_seq ON deliveries (seq, webhook_id);
