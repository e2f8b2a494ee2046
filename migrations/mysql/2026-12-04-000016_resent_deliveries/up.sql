-- Retention looked for events no delivery refers to through
-- deliveries_by_event (event_id): an index entry per delivery at insert,
-- for a query the Janitor runs every 10 minutes. Every delivery shares its
-- event's sequence number until it is resent (requeue gives it a new one,
-- which no event has), so deliveries_by_seq answers the same question for
-- all but the resent ones, and this table lists those: one row per resent
-- delivery, written by requeue, deleted with the delivery.
CREATE TABLE resent_deliveries (
    delivery_id VARCHAR(40) NOT NULL PRIMARY KEY,
    event_id VARCHAR(40) NOT NULL,
    KEY resent_deliveries_by_event (event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO resent_deliveries (delivery_id, event_id)
    SELECT d.id, d.event_id FROM deliveries d JOIN events e ON e.id = d.event_id
    WHERE d.seq <> e.seq;
DROP INDEX deliveries_by_event ON deliveries;
