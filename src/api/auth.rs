//! Authentication. A middleware on `/v1` works out who is calling before any
//! handler runs or any body is read: the admin (the admin token), an app (one
//! of its API keys), an ingest caller (an ingest key), or nobody. The
//! [`Admin`], [`AppAuth`] and [`Ingestor`] extractors then only read that
//! verdict, so a request with a wrong token is refused with 401 whatever its
//! body holds, and an ingest key with 403 anywhere but `POST /v1/events`.
//!
//! The admin token and app keys are compared through their SHA-256 digests:
//! the admin digest in constant time, app keys by looking their digest up,
//! so no comparison's time depends on the secret's bytes. Only the admin
//! token skips the app-key lookup, which tells a caller nothing the answer
//! itself does not.

use std::future::{ready, Ready};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use crate::actors::registry::{hash_api_key, Authenticate, Principal};
use crate::error::BrokerError;
use crate::idempotency::scope;

/// Who is calling.
#[derive(Debug, Clone)]
enum Identity {
    Admin,
    App(String),
    /// An ingest key ([`Principal::Ingest`]).
    Ingest(Principal),
    /// No valid credentials: why, for the 401.
    Nobody(String),
    /// The registry could not be asked.
    Unknown,
}

fn bearer(req: &HttpRequest) -> Result<&str, String> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or("missing Authorization: Bearer header")?;
    let value = header
        .to_str()
        .map_err(|_| "malformed Authorization header")?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err("Authorization must be `Bearer <token>`".into()),
    }
}

/// The SHA-256 of the admin token, what [`ApiState`] keeps.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

async fn identify(req: &HttpRequest) -> Identity {
    let Some(state) = req.app_data::<web::Data<ApiState>>() else {
        return Identity::Unknown;
    };
    let token = match bearer(req) {
        Ok(t) => t,
        Err(why) => return Identity::Nobody(why),
    };
    if bool::from(digest(token).ct_eq(&state.admin_token_digest)) {
        // Ingest comes with the admin token: no registry round trip for it.
        return Identity::Admin;
    }
    if token.starts_with(crate::portal_token::PREFIX) {
        // A portal link acts as its app's key, and never as anything more.
        return match super::portal::check_link(state, token).await {
            super::portal::LinkCheck::App(app_id) => Identity::App(app_id),
            super::portal::LinkCheck::Refused(why) => Identity::Nobody(why),
            super::portal::LinkCheck::Unavailable => Identity::Unknown,
        };
    }
    let app = state
        .registry
        .send(Authenticate {
            key_hash: hash_api_key(token),
        })
        .await;
    match app {
        Ok(Some(Principal::App { app_id, .. })) => Identity::App(app_id),
        Ok(Some(ingest @ Principal::Ingest { .. })) => Identity::Ingest(ingest),
        Ok(None) => Identity::Nobody("invalid token".into()),
        Err(_) => Identity::Unknown,
    }
}

/// The middleware: records the caller's identity for the extractors.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let identity = identify(req.request()).await;
    req.extensions_mut().insert(identity);
    next.call(req).await
}

fn identity(req: &HttpRequest) -> Identity {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .unwrap_or(Identity::Unknown)
}

const INGEST_ONLY: &str = "an ingest key may only call POST /v1/events";
const APP_NOT_ADMIN: &str = "an app API key cannot call admin endpoints";

/// The refusal of a caller that an extractor does not take: 403 for valid
/// credentials of another kind (`wrong_kind` says why), 401 for none.
fn refusal(identity: Identity, wrong_kind: &str) -> BrokerError {
    match identity {
        Identity::Ingest(_) => BrokerError::Forbidden(INGEST_ONLY.into()),
        Identity::Admin | Identity::App(_) => BrokerError::Forbidden(wrong_kind.into()),
        Identity::Nobody(why) => BrokerError::Unauthorized(why),
        Identity::Unknown => BrokerError::Unavailable("cannot check credentials right now".into()),
    }
}

/// A request made with the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = BrokerError;
    type Future = Ready<Result<Self, BrokerError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match identity(req) {
            Identity::Admin => Ok(Admin),
            other => Err(refusal(other, APP_NOT_ADMIN)),
        })
    }
}

/// A request made with an app's API key: the app's id.
pub struct AppAuth(pub String);

impl FromRequest for AppAuth {
    type Error = BrokerError;
    type Future = Ready<Result<Self, BrokerError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match identity(req) {
            Identity::App(app_id) => Ok(AppAuth(app_id)),
            other => Err(refusal(
                other,
                "the admin token is not an app API key; use the app's key",
            )),
        })
    }
}

/// A request that may send events: the admin token, or an ingest key.
pub enum Ingestor {
    /// The admin token.
    Admin,
    /// An ingest key ([`Principal::Ingest`]).
    Key(Principal),
}

impl Ingestor {
    /// Refuses (403) an ingest key limited to other apps than `app_id`.
    pub fn may_ingest_for(&self, app_id: &str) -> Result<(), BrokerError> {
        match self {
            Ingestor::Key(key) if !key.may_ingest_for(app_id) => Err(BrokerError::Forbidden(
                format!("this ingest key may not send events for app `{app_id}`"),
            )),
            _ => Ok(()),
        }
    }

    /// Whose Idempotency-Keys these are: the admin's, or this ingest key's.
    pub fn idempotency_scope(&self) -> String {
        match self {
            Ingestor::Key(Principal::Ingest { key_id, .. }) => scope::ingest(key_id),
            _ => scope::ADMIN.into(),
        }
    }
}

impl FromRequest for Ingestor {
    type Error = BrokerError;
    type Future = Ready<Result<Self, BrokerError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match identity(req) {
            Identity::Admin => Ok(Ingestor::Admin),
            Identity::Ingest(key) => Ok(Ingestor::Key(key)),
            other => Err(refusal(other, APP_NOT_ADMIN)),
        })
    }
}
