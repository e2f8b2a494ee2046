//! Queries on `webhooks`. Every write logs its change in its own
//! transaction ([`super::changes::record`]), so other instances see it.

use diesel::prelude::*;

use super::models::WebhookRow;
use super::schema::{deliveries, delivery_attempts, resent_deliveries, webhooks};
use super::{changes, DbConn};

/// Stores a new webhook.
pub fn insert(conn: &mut DbConn, row: &WebhookRow) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::insert_into(webhooks::table)
            .values(row)
            .execute(conn)?;
        super::leases::add(conn, &row.id)?;
        changes::record(conn, changes::kind::WEBHOOK, &row.id).map(drop)
    })
}

/// Rewrites a webhook's mutable fields (URI, events, status, secret,
/// headers).
pub fn update(conn: &mut DbConn, row: &WebhookRow) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let n = set_fields(conn, row)?;
        if n > 0 {
            changes::record(conn, changes::kind::WEBHOOK, &row.id)?;
        }
        Ok(n)
    })
}

fn set_fields(conn: &mut DbConn, row: &WebhookRow) -> QueryResult<usize> {
    diesel::update(webhooks::table.find(&row.id))
        .set((
            webhooks::uri.eq(&row.uri),
            webhooks::events.eq(&row.events),
            webhooks::secret.eq(&row.secret),
            webhooks::status.eq(&row.status),
            webhooks::disabled_reason.eq(&row.disabled_reason),
            webhooks::disabled_at.eq(row.disabled_at),
            webhooks::updated_at.eq(row.updated_at),
            webhooks::previous_secret.eq(&row.previous_secret),
            webhooks::previous_secret_expires_at.eq(row.previous_secret_expires_at),
            webhooks::headers.eq(&row.headers),
            webhooks::rate_limit.eq(row.rate_limit),
            webhooks::max_concurrency.eq(row.max_concurrency),
        ))
        .execute(conn)
}

/// Deletes a webhook with its delivery history, in one transaction, so a
/// deleted webhook leaves no pending work behind to resume at the next start.
pub fn delete(conn: &mut DbConn, id: &str) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let ids = deliveries::table
            .filter(deliveries::webhook_id.eq(id))
            .select(deliveries::id);
        diesel::delete(delivery_attempts::table.filter(delivery_attempts::delivery_id.eq_any(ids)))
            .execute(conn)?;
        diesel::delete(resent_deliveries::table.filter(resent_deliveries::delivery_id.eq_any(ids)))
            .execute(conn)?;
        diesel::delete(deliveries::table.filter(deliveries::webhook_id.eq(id))).execute(conn)?;
        super::leases::remove(conn, id)?;
        let n = diesel::delete(webhooks::table.find(id)).execute(conn)?;
        if n > 0 {
            changes::record(conn, changes::kind::WEBHOOK, id)?;
        }
        Ok(n)
    })
}

/// The webhooks among `ids` that exist.
pub fn by_ids(conn: &mut DbConn, ids: &[&str]) -> QueryResult<Vec<WebhookRow>> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        rows.extend(
            webhooks::table
                .filter(webhooks::id.eq_any(chunk))
                .select(WebhookRow::as_select())
                .load(conn)?,
        );
    }
    Ok(rows)
}

/// Up to `limit` webhooks with ids past `after`, in id (creation) order:
/// the whole table, read a page at a time, so that the rows of 100,000
/// webhooks never sit in memory beside everything built from them.
pub fn page_after(
    conn: &mut DbConn,
    after: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<WebhookRow>> {
    let mut query = webhooks::table
        .order(webhooks::id)
        .select(WebhookRow::as_select())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(webhooks::id.gt(after));
    }
    query.load(conn)
}
