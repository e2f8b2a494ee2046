//! Queries on `events`, `deliveries` and `delivery_attempts`: the outbox.

use diesel::prelude::*;

use super::models::{status, AttemptRow, DeliveryRow, EventRow};
use super::schema::{deliveries, delivery_attempts, events};
use super::DbConn;

/// Stores an event and its deliveries in one transaction: either the event
/// is accepted with every delivery it owes, or not at all.
pub fn insert_event(conn: &mut DbConn, event: &EventRow, rows: &[DeliveryRow]) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::insert_into(events::table)
            .values(event)
            .execute(conn)?;
        // Multi-row inserts do not compile through the MultiConnection enum,
        // so each backend gets its own (identical) statement.
        if !rows.is_empty() {
            match conn {
                DbConn::Sqlite(c) => diesel::insert_into(deliveries::table)
                    .values(rows)
                    .execute(c)?,
                DbConn::Mysql(c) => diesel::insert_into(deliveries::table)
                    .values(rows)
                    .execute(c)?,
            };
        }
        Ok(())
    })
}

/// What an attempt changes on its delivery.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// The new status: still pending (a retry is due), succeeded or failed.
    pub status: &'static str,
    /// When the next attempt is due, for a pending delivery.
    pub next_attempt_at: i64,
    /// When it succeeded.
    pub delivered_at: Option<i64>,
}

/// Records one attempt and its effect on the delivery, atomically.
pub fn record_attempt(
    conn: &mut DbConn,
    attempt: &AttemptRow,
    outcome: &AttemptOutcome,
) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::insert_into(delivery_attempts::table)
            .values(attempt)
            .execute(conn)?;
        diesel::update(deliveries::table.find(&attempt.delivery_id))
            .set((
                deliveries::status.eq(outcome.status),
                deliveries::attempts.eq(attempt.attempt),
                deliveries::next_attempt_at.eq(outcome.next_attempt_at),
                deliveries::last_status_code.eq(attempt.status_code),
                deliveries::last_error.eq(&attempt.error),
                deliveries::delivered_at.eq(outcome.delivered_at),
            ))
            .execute(conn)?;
        Ok(())
    })
}

/// A pending delivery with the body it carries.
pub type PendingDelivery = (DeliveryRow, String);

/// Every pending delivery, in the order the events were accepted.
pub fn pending(conn: &mut DbConn) -> QueryResult<Vec<PendingDelivery>> {
    deliveries::table
        .inner_join(events::table)
        .filter(deliveries::status.eq(status::PENDING))
        .order((deliveries::created_at, deliveries::id))
        .select((DeliveryRow::as_select(), events::payload))
        .load(conn)
}

/// One delivery by id.
pub fn find(conn: &mut DbConn, id: &str) -> QueryResult<Option<DeliveryRow>> {
    deliveries::table
        .find(id)
        .select(DeliveryRow::as_select())
        .first(conn)
        .optional()
}

/// The attempts of one delivery, first to last.
pub fn attempts(conn: &mut DbConn, delivery_id: &str) -> QueryResult<Vec<AttemptRow>> {
    delivery_attempts::table
        .filter(delivery_attempts::delivery_id.eq(delivery_id))
        .order(delivery_attempts::attempt)
        .select(AttemptRow::as_select())
        .load(conn)
}
