CREATE INDEX deliveries_by_created ON deliveries (created_at);
