-- Pruning walks succeeded deliveries in sequence order, as on MySQL (where
-- the index by age went): the resume point of a pruning pass is a
-- sequence number on both stores. Succeeded rows only, as before.
DROP INDEX deliveries_succeeded_by_created;
CREATE INDEX deliveries_succeeded_by_seq ON deliveries (seq) WHERE status = 'succeeded';
