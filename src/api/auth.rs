//! Bearer-token extractors. The admin token and app API keys are compared
//! through their SHA-256 digests: the admin digest in constant time, app keys
//! by looking the digest up, so a wrong key costs the same as a right one and
//! no comparison time depends on the secret's bytes.

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use crate::actors::registry::{hash_api_key, Authenticate};
use crate::error::BrokerError;

fn bearer(req: &HttpRequest) -> Result<&str, BrokerError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| BrokerError::Unauthorized("missing Authorization: Bearer header".into()))?;
    let value = header
        .to_str()
        .map_err(|_| BrokerError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        BrokerError::Unauthorized("Authorization must be `Bearer <token>`".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(BrokerError::Unauthorized(
            "Authorization must be `Bearer <token>`".into(),
        ));
    }
    Ok(token.trim())
}

fn state(req: &HttpRequest) -> Result<web::Data<ApiState>, BrokerError> {
    req.app_data::<web::Data<ApiState>>()
        .cloned()
        .ok_or_else(|| BrokerError::Internal("broker routes mounted without their state".into()))
}

/// The SHA-256 of the admin token, what [`ApiState`] keeps.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn is_admin(state: &ApiState, token: &str) -> bool {
    bool::from(digest(token).ct_eq(&state.admin_token_digest))
}

/// A request made with the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = BrokerError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, BrokerError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = state(req).and_then(|s| Ok((s, bearer(req)?.to_owned())));
        Box::pin(async move {
            let (state, token) = checked?;
            if is_admin(&state, &token) {
                return Ok(Admin);
            }
            let app = state
                .registry
                .send(Authenticate {
                    key_hash: hash_api_key(&token),
                })
                .await?;
            Err(match app {
                Some(_) => {
                    BrokerError::Forbidden("an app API key cannot call admin endpoints".into())
                }
                None => BrokerError::Unauthorized("invalid admin token".into()),
            })
        })
    }
}

/// A request made with an app's API key: the app's id.
pub struct AppAuth(pub String);

impl FromRequest for AppAuth {
    type Error = BrokerError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, BrokerError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = state(req).and_then(|s| Ok((s, bearer(req)?.to_owned())));
        Box::pin(async move {
            let (state, token) = checked?;
            let app = state
                .registry
                .send(Authenticate {
                    key_hash: hash_api_key(&token),
                })
                .await?;
            match app {
                Some(app_id) => Ok(AppAuth(app_id)),
                None if is_admin(&state, &token) => Err(BrokerError::Forbidden(
                    "the admin token is not an app API key; use the app's key".into(),
                )),
                None => Err(BrokerError::Unauthorized("invalid API key".into())),
            }
        })
    }
}
