DROP INDEX deliveries_succeeded_by_seq;
CREATE INDEX deliveries_succeeded_by_created ON deliveries (created_at) WHERE status = 'succeeded';
