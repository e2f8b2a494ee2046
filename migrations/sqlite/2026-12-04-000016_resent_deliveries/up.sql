-- See the MySQL migration of the same name. SQLite keeps
-- deliveries_by_event: its sequence indexes are partial (pending and
-- succeeded rows only), so they cannot say that no failed delivery refers
-- to an event. The table is kept the same way on both stores all the same,
-- so the code that writes it is one.
CREATE TABLE resent_deliveries (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    event_id TEXT NOT NULL
);
CREATE INDEX resent_deliveries_by_event ON resent_deliveries (event_id);
INSERT INTO resent_deliveries (delivery_id, event_id)
    SELECT d.id, d.event_id FROM deliveries d JOIN events e ON e.id = d.event_id
    WHERE d.seq <> e.seq;
