CREATE INDEX deliveries_by_event ON deliveries (event_id);
DROP TABLE resent_deliveries;
