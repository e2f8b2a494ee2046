DROP INDEX deliveries_by_lease_owner ON deliveries;
DROP INDEX deliveries_pending_by_webhook ON deliveries;
