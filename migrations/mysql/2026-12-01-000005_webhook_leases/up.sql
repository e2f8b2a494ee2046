-- Several instances on one database. Work is leased per webhook, not per
-- delivery: one row per webhook says which instance sends its deliveries
-- (owner), until when by the database's clock (lease_until, epoch ms), and
-- under which fencing token (epoch, one more on every takeover). Every
-- outcome write locks the lease row and checks owner and epoch.
CREATE TABLE webhook_leases (
    webhook_id VARCHAR(40) NOT NULL PRIMARY KEY,
    owner VARCHAR(64) NULL,
    epoch BIGINT NOT NULL,
    lease_until BIGINT NULL,
    -- A claim walks the free and lapsed leases (NULL sorts first), never a
    -- sort, so SKIP LOCKED locks only what it takes.
    KEY webhook_leases_until (lease_until),
    KEY webhook_leases_owner (owner)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO webhook_leases (webhook_id, owner, epoch, lease_until)
    SELECT id, NULL, 0, NULL FROM webhooks;

-- Live instances, for the fair share of leases each takes.
CREATE TABLE broker_instances (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    alive_until BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The order of events, from the database: a one-row counter bumped by each
-- ingest transaction before its inserts. Its row lock serialises ingest
-- transactions from the bump to their commit, so sequence numbers are
-- handed out in commit order (unlike AUTO_INCREMENT): a reader that has
-- seen n has seen everything below n.
CREATE TABLE event_sequence (
    id INT NOT NULL PRIMARY KEY,
    seq BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
ALTER TABLE events ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
UPDATE events e
    JOIN (SELECT id, ROW_NUMBER() OVER (ORDER BY created_at, id) AS n FROM events) r
    ON e.id = r.id
    SET e.seq = r.n;
UPDATE deliveries d JOIN events e ON d.event_id = e.id SET d.seq = e.seq;
INSERT INTO event_sequence (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events;

-- Delivery-level leases are gone: a webhook's lease covers its deliveries.
DROP INDEX deliveries_by_lease_owner ON deliveries;
DROP INDEX deliveries_pending_by_webhook ON deliveries;
ALTER TABLE deliveries DROP COLUMN lease_owner, DROP COLUMN lease_until;
-- Backlog pages walk one webhook's pending deliveries in sequence order.
CREATE INDEX deliveries_pending_by_webhook ON deliveries (webhook_id, status, seq);
-- An owner finds which webhooks got deliveries from other instances in a
-- stretch of the sequence.
CREATE INDEX deliveries_by_seq ON deliveries (seq, webhook_id);
