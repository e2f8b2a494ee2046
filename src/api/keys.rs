//! API keys, managed with the admin token: an app's keys (several at once,
//! so one can be rotated in before the old one is revoked) and ingest keys
//! (for channel services, which then need no admin token). A key is shown
//! once, in the answer that creates it; lists show its id, prefix and
//! times, never the key.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Admin;
use super::webhooks::Deleted;
use super::{optional_json, query, ApiState};
use crate::actors::registry::{CreateAppKey, CreateIngestKey, RevokeAppKey, RevokeIngestKey};
use crate::db::keys::{KeyRow, NewKey};
use crate::error::{BrokerError, ErrorBody};

/// The most apps one ingest key may be limited to.
pub const MAX_INGEST_KEY_APPS: usize = 100;

/// A key as listed: never the key itself.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// `key_...`: what revokes it.
    #[schema(example = "key_019ac9f2b6d17c02a8e41f5b3c9d7e20")]
    pub id: String,
    /// The key's first 12 characters, to tell keys apart.
    #[schema(example = "wbk_Xq3vT9aB")]
    pub prefix: String,
    /// The label given at creation.
    pub name: Option<String>,
    /// Creation time, epoch milliseconds.
    #[schema(format = Int64)]
    pub created_at: i64,
    /// The last authenticated use, epoch milliseconds, to within a minute;
    /// `null` when never used.
    #[schema(format = Int64)]
    pub last_used_at: Option<i64>,
    /// Ingest keys only: the apps it may send events for, `null` for every
    /// app.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>, nullable = true)]
    pub apps: Option<Option<Vec<String>>>,
}

impl KeyView {
    /// The listed form of a stored key.
    pub fn of(row: &KeyRow) -> KeyView {
        KeyView {
            id: row.id.clone(),
            prefix: row.prefix.clone(),
            name: row.name.clone(),
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            apps: (row.kind == crate::domain::KeyKind::Ingest).then(|| row.app_list()),
        }
    }
}

/// A key just created: the only answer that shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The key's id and details.
    #[serde(flatten)]
    pub key: KeyView,
    /// The key, `wbk_...` (app) or `wbi_...` (ingest); the broker keeps only
    /// its SHA-256.
    #[schema(example = "wbk_...")]
    pub api_key: String,
}

impl From<NewKey> for CreatedKey {
    fn from(k: NewKey) -> Self {
        CreatedKey {
            key: KeyView::of(&k.row),
            api_key: k.api_key,
        }
    }
}

/// A list of keys, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys.
    pub data: Vec<KeyView>,
}

/// `POST /v1/apps/{appId}/keys`: an optional body.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateKeyBody {
    /// A label, 1 to 255 characters.
    #[schema(max_length = 255, example = "deploy 2026-12")]
    name: Option<String>,
}

/// `POST /v1/ingest-keys`: an optional body.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateIngestKeyBody {
    /// A label, 1 to 255 characters.
    #[schema(max_length = 255, example = "channel service eu-1")]
    name: Option<String>,
    /// The apps it may send events for (1 to 100 ids); leave it out for
    /// every app.
    #[schema(min_items = 1, max_items = 100)]
    apps: Option<Vec<String>>,
}

fn key_name(name: Option<String>) -> Result<Option<String>, BrokerError> {
    name.map(|n| {
        crate::db::keys::normalize_name(&n).ok_or_else(|| {
            BrokerError::bad_request("invalid_name", "name must be 1 to 255 characters")
        })
    })
    .transpose()
}

fn ingest_apps(apps: Option<Vec<String>>) -> Result<Option<Vec<String>>, BrokerError> {
    let Some(apps) = apps else {
        return Ok(None);
    };
    if apps.is_empty() || apps.len() > MAX_INGEST_KEY_APPS {
        return Err(BrokerError::bad_request(
            "invalid_apps",
            format!(
                "apps must list 1 to {MAX_INGEST_KEY_APPS} app ids, or be left out for every app"
            ),
        ));
    }
    let mut apps: Vec<String> = apps.into_iter().map(|a| a.trim().to_owned()).collect();
    apps.sort();
    apps.dedup();
    Ok(Some(apps))
}

/// Creates one more API key for an app (at most 10 at once).
#[utoipa::path(
    post,
    path = "/v1/apps/{app_id}/keys",
    operation_id = "createAppKey",
    tag = "keys",
    security(("admin_token" = [])),
    params(("app_id" = String, Path, description = "The app's id, `app_...`")),
    request_body(content = Option<CreateKeyBody>, description = "Optional"),
    responses(
        (status = 201, description = "The key, shown only in this answer", body = CreatedKey),
        (status = 400, description = "Malformed JSON or an invalid name", body = ErrorBody),
        super::openapi::AdminFailures,
        (status = 404, description = "No such app", body = ErrorBody),
        (status = 409, description = "The app already holds 10 keys", body = ErrorBody),
        (status = 413, description = "The body is over BROKER_MAX_BODY", body = ErrorBody),
        (status = 422, description = "A wrong type", body = ErrorBody),
    ),
)]
pub async fn create_app_key(
    _: Admin,
    state: web::Data<ApiState>,
    app_id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, BrokerError> {
    let body: CreateKeyBody = optional_json(payload, state.max_body)
        .await?
        .unwrap_or_default();
    let key = state
        .registry
        .send(CreateAppKey {
            app_id: app_id.into_inner(),
            name: key_name(body.name)?,
        })
        .await??;
    Ok(HttpResponse::Created().json(CreatedKey::from(key)))
}

/// An app's keys, oldest first, never the keys themselves.
#[utoipa::path(
    get,
    path = "/v1/apps/{app_id}/keys",
    operation_id = "listAppKeys",
    tag = "keys",
    security(("admin_token" = [])),
    params(("app_id" = String, Path, description = "The app's id, `app_...`")),
    responses(
        (status = 200, description = "The app's keys", body = KeyList),
        super::openapi::AdminFailures,
        (status = 404, description = "No such app", body = ErrorBody),
    ),
)]
pub async fn list_app_keys(
    _: Admin,
    state: web::Data<ApiState>,
    app_id: web::Path<String>,
) -> Result<HttpResponse, BrokerError> {
    let app_id = app_id.into_inner();
    let (apps, keys) = query(state.pool.clone(), {
        let app_id = app_id.clone();
        move |conn| {
            Ok((
                crate::db::apps::by_ids(conn, &[&app_id])?,
                crate::db::keys::app_keys(conn, &app_id)?,
            ))
        }
    })
    .await?;
    if apps.is_empty() {
        return Err(BrokerError::NotFound(format!("app `{app_id}` not found")));
    }
    Ok(HttpResponse::Ok().json(KeyList {
        data: keys.iter().map(KeyView::of).collect(),
    }))
}

/// Revokes one of an app's keys: refused on every instance within a second.
#[utoipa::path(
    delete,
    path = "/v1/apps/{app_id}/keys/{key_id}",
    operation_id = "revokeAppKey",
    tag = "keys",
    security(("admin_token" = [])),
    params(
        ("app_id" = String, Path, description = "The app's id, `app_...`"),
        ("key_id" = String, Path, description = "The key's id, `key_...`"),
    ),
    responses(
        (status = 200, description = "Revoked: an empty object", body = Deleted),
        super::openapi::AdminFailures,
        (status = 404, description = "No such app, or no such key of this app", body = ErrorBody),
    ),
)]
pub async fn revoke_app_key(
    _: Admin,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, BrokerError> {
    let (app_id, key_id) = path.into_inner();
    state
        .registry
        .send(RevokeAppKey { app_id, key_id })
        .await??;
    Ok(HttpResponse::Ok().json(Deleted {}))
}

/// Creates an ingest key: it may call `POST /v1/events` and nothing else,
/// for the listed apps only when `apps` is given.
#[utoipa::path(
    post,
    path = "/v1/ingest-keys",
    operation_id = "createIngestKey",
    tag = "keys",
    security(("admin_token" = [])),
    request_body(content = Option<CreateIngestKeyBody>, description = "Optional"),
    responses(
        (status = 201, description = "The key, shown only in this answer", body = CreatedKey),
        (status = 400, description = "Malformed JSON, an invalid name or an invalid apps list", body = ErrorBody),
        super::openapi::AdminFailures,
        (status = 413, description = "The body is over BROKER_MAX_BODY", body = ErrorBody),
        (status = 422, description = "A wrong type, or an unknown app in apps", body = ErrorBody),
    ),
)]
pub async fn create_ingest_key(
    _: Admin,
    state: web::Data<ApiState>,
    payload: web::Payload,
) -> Result<HttpResponse, BrokerError> {
    let body: CreateIngestKeyBody = optional_json(payload, state.max_body)
        .await?
        .unwrap_or_default();
    let key = state
        .registry
        .send(CreateIngestKey {
            name: key_name(body.name)?,
            apps: ingest_apps(body.apps)?,
        })
        .await??;
    Ok(HttpResponse::Created().json(CreatedKey::from(key)))
}

/// Every ingest key, oldest first, never the keys themselves.
#[utoipa::path(
    get,
    path = "/v1/ingest-keys",
    operation_id = "listIngestKeys",
    tag = "keys",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The ingest keys", body = KeyList),
        super::openapi::AdminFailures,
    ),
)]
pub async fn list_ingest_keys(
    _: Admin,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, BrokerError> {
    let keys = query(state.pool.clone(), crate::db::keys::ingest_keys).await?;
    Ok(HttpResponse::Ok().json(KeyList {
        data: keys.iter().map(KeyView::of).collect(),
    }))
}

/// Revokes an ingest key: refused on every instance within a second.
#[utoipa::path(
    delete,
    path = "/v1/ingest-keys/{key_id}",
    operation_id = "revokeIngestKey",
    tag = "keys",
    security(("admin_token" = [])),
    params(("key_id" = String, Path, description = "The key's id, `key_...`")),
    responses(
        (status = 200, description = "Revoked: an empty object", body = Deleted),
        super::openapi::AdminFailures,
        (status = 404, description = "No such ingest key", body = ErrorBody),
    ),
)]
pub async fn revoke_ingest_key(
    _: Admin,
    state: web::Data<ApiState>,
    key_id: web::Path<String>,
) -> Result<HttpResponse, BrokerError> {
    state
        .registry
        .send(RevokeIngestKey {
            key_id: key_id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(Deleted {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ingest_key_names_some_apps_or_none() {
        assert_eq!(ingest_apps(None).unwrap(), None);
        assert_eq!(
            ingest_apps(Some(vec!["app_b".into(), " app_a".into(), "app_b".into()])).unwrap(),
            Some(vec!["app_a".to_owned(), "app_b".to_owned()])
        );
        assert!(ingest_apps(Some(vec![])).is_err());
        assert!(ingest_apps(Some(vec!["a".into(); 101])).is_err());
    }

    #[test]
    fn a_key_name_is_trimmed_and_bounded() {
        assert_eq!(key_name(None).unwrap(), None);
        assert_eq!(
            key_name(Some(" ci ".into())).unwrap().as_deref(),
            Some("ci")
        );
        assert!(key_name(Some("  ".into())).is_err());
    }
}
