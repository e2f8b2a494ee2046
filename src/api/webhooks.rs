//! App endpoints: an app's webhooks. Every call is scoped to the app whose
//! API key made it; another app's webhook answers 404.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AppAuth;
use super::ApiState;
use crate::actors::registry::{
    CreateWebhook, DeleteWebhook, GetSecret, GetWebhook, ListWebhooks, RotateSecret, UpdateWebhook,
    Webhook, WebhookStatus,
};
use crate::domain::{EventSet, WebhookUri};
use crate::error::BrokerError;

/// The largest page.
pub const MAX_PAGE_LENGTH: usize = 100;

/// `event` as the API takes it: `"all"`, `"a,b"` or `["a","b"]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum EventField {
    /// `"all"` or a comma-separated list.
    List(String),
    /// A JSON array of names.
    Array(Vec<String>),
}

impl EventField {
    fn parse(&self) -> Result<EventSet, BrokerError> {
        Ok(match self {
            EventField::List(s) => EventSet::parse_list(s)?,
            EventField::Array(v) => EventSet::from_names(v.iter().map(String::as_str))?,
        })
    }
}

/// The body of `POST /v1/webhook` and `PUT /v1/webhook/{id}`.
#[derive(Deserialize)]
pub struct WebhookBody {
    uri: String,
    event: EventField,
    status: Option<String>,
}

struct ValidBody {
    uri: WebhookUri,
    events: EventSet,
    status: Option<WebhookStatus>,
}

impl WebhookBody {
    fn validate(&self, state: &ApiState) -> Result<ValidBody, BrokerError> {
        let events = self.event.parse()?;
        let uri = WebhookUri::parse(&self.uri, state.allow_private_targets)?;
        let status = match self.status.as_deref() {
            None => None,
            Some("enabled") => Some(WebhookStatus::Enabled),
            Some("disabled") => Some(WebhookStatus::Disabled),
            Some(other) => {
                return Err(BrokerError::bad_request(
                    "invalid_status",
                    format!("status must be `enabled` or `disabled`, not `{other}`"),
                ))
            }
        };
        Ok(ValidBody {
            uri,
            events,
            status,
        })
    }
}

/// The public form of a webhook. The secret is not part of it.
pub fn view(w: &Webhook) -> Value {
    let mut v = json!({
        "id": w.id,
        "uri": w.uri.as_str(),
        "event": w.events.kinds(),
        "status": w.status.as_str(),
        "createdAt": w.created_at,
        "updatedAt": w.updated_at,
    });
    if w.status == WebhookStatus::Disabled {
        v["disabledReason"] = json!(w.disabled_reason);
        v["disabledAt"] = json!(w.disabled_at);
    }
    v
}

/// `POST /v1/webhook`: the only answer, besides `/secret`, with the secret.
pub async fn create(
    app: AppAuth,
    state: web::Data<ApiState>,
    body: web::Json<WebhookBody>,
) -> Result<HttpResponse, BrokerError> {
    let valid = body.validate(&state)?;
    if valid.status == Some(WebhookStatus::Disabled) {
        return Err(BrokerError::bad_request(
            "invalid_status",
            "a new webhook starts enabled",
        ));
    }
    let webhook = state
        .registry
        .send(CreateWebhook {
            app_id: app.0,
            uri: valid.uri,
            events: valid.events,
        })
        .await??;
    let mut v = view(&webhook);
    v["secret"] = json!(webhook.secret);
    Ok(HttpResponse::Created().json(v))
}

/// `GET /v1/webhook` query.
#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<String>,
    length: Option<String>,
    event: Option<String>,
}

/// Parses `page` (>= 0, default 0) and `length` (1..=100, default 10).
pub fn parse_page(page: Option<&str>, length: Option<&str>) -> Result<(usize, usize), BrokerError> {
    let page = match page.map(str::trim) {
        None | Some("") => 0,
        Some(p) => p.parse::<usize>().map_err(|_| {
            BrokerError::bad_request("invalid_page", "page must be a whole number >= 0")
        })?,
    };
    let length = match length.map(str::trim) {
        None | Some("") => 10,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_LENGTH).contains(&n) => n,
            _ => {
                return Err(BrokerError::bad_request(
                    "invalid_length",
                    format!("length must be a whole number from 1 to {MAX_PAGE_LENGTH}"),
                ))
            }
        },
    };
    Ok((page, length))
}

/// `GET /v1/webhook?page&length&event`: oldest first.
pub async fn list(
    app: AppAuth,
    state: web::Data<ApiState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, BrokerError> {
    let (page, length) = parse_page(query.page.as_deref(), query.length.as_deref())?;
    let filter = match query.event.as_deref() {
        None => None,
        Some(raw) => Some(EventSet::parse_list(raw)?),
    };
    let result = state
        .registry
        .send(ListWebhooks {
            app_id: app.0,
            page,
            length,
            filter,
        })
        .await?;
    let data: Vec<Value> = result.data.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({
        "data": data,
        "total": result.total,
        "length": data.len(),
        "page": page,
    })))
}

/// `GET /v1/webhook/{id}`.
pub async fn get(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, BrokerError> {
    let webhook = state
        .registry
        .send(GetWebhook {
            app_id: app.0,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(view(&webhook)))
}

/// `PUT /v1/webhook/{id}`: the create body, plus an optional `status`.
pub async fn update(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: web::Json<WebhookBody>,
) -> Result<HttpResponse, BrokerError> {
    let valid = body.validate(&state)?;
    let webhook = state
        .registry
        .send(UpdateWebhook {
            app_id: app.0,
            id: id.into_inner(),
            uri: valid.uri,
            events: valid.events,
            status: valid.status,
        })
        .await??;
    Ok(HttpResponse::Ok().json(view(&webhook)))
}

/// `DELETE /v1/webhook/{id}` query.
#[derive(Deserialize)]
pub struct DeleteQuery {
    event: Option<String>,
}

/// `DELETE /v1/webhook/{id}[?event=a,b]`.
pub async fn delete(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, BrokerError> {
    let events = match query.event.as_deref() {
        None => None,
        Some(raw) => Some(EventSet::parse_list(raw)?),
    };
    state
        .registry
        .send(DeleteWebhook {
            app_id: app.0,
            id: id.into_inner(),
            events,
        })
        .await??;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `GET /v1/webhook/{id}/secret`.
pub async fn secret(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, BrokerError> {
    let secret = state
        .registry
        .send(GetSecret {
            app_id: app.0,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(json!({ "secret": secret })))
}

/// `POST /v1/webhook/{id}/secret/rotate`: a new secret; the previous one
/// keeps signing, beside it, for BROKER_SECRET_GRACE.
pub async fn rotate_secret(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, BrokerError> {
    let secret = state
        .registry
        .send(RotateSecret {
            app_id: app.0,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(json!({ "secret": secret })))
}
