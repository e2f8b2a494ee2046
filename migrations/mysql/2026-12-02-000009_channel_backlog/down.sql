DROP INDEX deliveries_pending_by_channel ON deliveries;
