DROP INDEX webhook_leases_owner ON webhook_leases;
CREATE INDEX webhook_leases_owner ON webhook_leases (owner);
