//! Queries on `apps`.

use diesel::prelude::*;

use super::models::AppRow;
use super::schema::apps;
use super::DbConn;

/// Stores a new app.
pub fn insert(conn: &mut DbConn, app: &AppRow) -> QueryResult<()> {
    diesel::insert_into(apps::table)
        .values(app)
        .execute(conn)
        .map(drop)
}

/// Every app, oldest first.
pub fn all(conn: &mut DbConn) -> QueryResult<Vec<AppRow>> {
    apps::table
        .order(apps::id)
        .select(AppRow::as_select())
        .load(conn)
}
