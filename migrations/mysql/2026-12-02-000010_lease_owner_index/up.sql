-- Renewals and claims look leases up by owner and webhook id together.
-- InnoDB's secondary indexes already end with the primary key, so this is
-- the same index as before under its explicit name; SQLite needed the
-- change (see migrations/sqlite).
DROP INDEX webhook_leases_owner ON webhook_leases;
CREATE INDEX webhook_leases_owner ON webhook_leases (owner, webhook_id);
