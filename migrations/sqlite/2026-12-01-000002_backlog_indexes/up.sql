-- Backlog pages walk one webhook's pending deliveries in acceptance order.
CREATE INDEX deliveries_pending_by_webhook ON deliveries (webhook_id, status, created_at, id);
-- Renew and release find one instance's leases without a full scan.
CREATE INDEX deliveries_by_lease_owner ON deliveries (lease_owner, status);
