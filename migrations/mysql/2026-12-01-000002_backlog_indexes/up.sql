-- Backlog pages walk one webhook's pending deliveries in acceptance order;
-- a SKIP LOCKED claim must walk an index, or the sort locks every row read.
CREATE INDEX deliveries_pending_by_webhook ON deliveries (webhook_id, status, created_at, id);
-- Renew and release find one instance's leases without scanning (and, on
-- InnoDB, locking) every pending row.
CREATE INDEX deliveries_by_lease_owner ON deliveries (lease_owner, status);
