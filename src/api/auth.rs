//! Authentication. A middleware on `/v1` works out who is calling before any
//! handler runs or any body is read: the admin (the admin token), an app (an
//! API key), or nobody. The [`Admin`] and [`AppAuth`] extractors then only
//! read that verdict, so a request with a wrong token is refused with 401
//! whatever its body holds.
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
use crate::actors::registry::{hash_api_key, Authenticate};
use crate::error::BrokerError;

/// Who is calling.
#[derive(Debug, Clone)]
enum Identity {
    Admin,
    App(String),
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
        Ok(Some(app_id)) => Identity::App(app_id),
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

/// A request made with the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = BrokerError;
    type Future = Ready<Result<Self, BrokerError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match identity(req) {
            Identity::Admin => Ok(Admin),
            Identity::App(_) => Err(BrokerError::Forbidden(
                "an app API key cannot call admin endpoints".into(),
            )),
            Identity::Nobody(why) => Err(BrokerError::Unauthorized(why)),
            Identity::Unknown => Err(BrokerError::Unavailable(
                "cannot check credentials right now".into(),
            )),
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
            Identity::Admin => Err(BrokerError::Forbidden(
                "the admin token is not an app API key; use the app's key".into(),
            )),
            Identity::Nobody(why) => Err(BrokerError::Unauthorized(why)),
            Identity::Unknown => Err(BrokerError::Unavailable(
                "cannot check credentials right now".into(),
            )),
        })
    }
}
