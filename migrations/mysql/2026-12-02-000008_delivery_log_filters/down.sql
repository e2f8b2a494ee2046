DROP INDEX deliveries_by_webhook_channel ON deliveries;
