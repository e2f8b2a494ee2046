//! Idempotency keys: `POST /v1/events`, `POST /v1/webhook` and
//! `POST /v1/apps` take an `Idempotency-Key` header, and an in-process
//! [`ChannelEvent`](crate::ChannelEvent) an `idempotency_key`, so that a
//! caller can retry without doing the work twice.
//!
//! - A key is scoped to its caller: `admin` (the admin token), `app:<id>`
//!   (an app's API key) or `in-process`.
//! - The first request with a key inserts an in-flight row (the primary key
//!   on `(scope, key)` lets only one insert win, on any instance sharing the
//!   database). When it succeeds (2xx) its status and body are stored until
//!   BROKER_IDEMPOTENCY_TTL after it began; when it fails (any 4xx or 5xx)
//!   the row is deleted, so the caller can fix the request, or retry, with
//!   the same key.
//! - A request whose key is in flight answers 409 `idempotency_key_in_use`.
//!   One whose key is done answers the stored answer, with
//!   `Idempotent-Replayed: true`, when its content is the same (same
//!   operation, same JSON), and 422 `idempotency_key_reused` when not.
//! - An in-flight row older than [`ABANDONED_AFTER`] is taken to be left by
//!   an instance that crashed or lost the database before it could finish,
//!   and the next request with the key takes it over (every request here
//!   finishes in well under a second, or fails with 503 in a few).

use std::future::Future;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::db::idempotency::{self as rows, state, Claimed, IdempotencyRow};
use crate::db::{now_ms, Pool};
use crate::error::BrokerError;

/// The request header.
pub const HEADER: &str = "Idempotency-Key";
/// The header on a replayed answer (`true`).
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";
/// The longest key.
pub const MAX_KEY_LEN: usize = 255;
/// How long an in-flight row blocks its key before it counts as abandoned.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// The scopes keys live in.
pub mod scope {
    /// Calls made with the admin token.
    pub const ADMIN: &str = "admin";
    /// [`ChannelEvent`](crate::ChannelEvent)s sent to the dispatcher.
    pub const IN_PROCESS: &str = "in-process";

    /// Calls made with an app's API key.
    pub fn app(app_id: &str) -> String {
        format!("app:{app_id}")
    }

    /// Calls made with an ingest key: each key is its own caller.
    pub fn ingest(key_id: &str) -> String {
        format!("ingest:{key_id}")
    }
}

/// Checks a key: 1 to [`MAX_KEY_LEN`] visible ASCII characters (spaces
/// allowed inside, not only spaces).
pub fn validate_key(raw: &[u8]) -> Result<String, BrokerError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_KEY_LEN
        && raw.iter().all(|b| (0x20..=0x7e).contains(b))
        && raw.iter().any(|b| *b != b' ');
    if !ok {
        return Err(BrokerError::bad_request(
            "invalid_idempotency_key",
            format!(
                "the {HEADER} header must be 1 to {MAX_KEY_LEN} visible ASCII characters, not all spaces"
            ),
        ));
    }
    Ok(String::from_utf8_lossy(raw).into_owned())
}

/// The hash that tells whether a retry is the same request: SHA-256 of the
/// operation (`POST /v1/events`) and its content (canonical JSON text).
pub fn request_hash(operation: &str, content: &str) -> String {
    let mut h = Sha256::new();
    h.update(operation.as_bytes());
    h.update(b"\n");
    h.update(content.as_bytes());
    format!("{:x}", h.finalize())
}

/// An answer: the first one, or the stored one replayed.
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// Whether it is a replay of a stored answer.
    pub replayed: bool,
}

impl std::fmt::Debug for Answer {
    // The body may hold a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("replayed", &self.replayed)
            .finish_non_exhaustive()
    }
}

/// Runs `op` at most once for `(scope, key)` and this content, as the
/// module explains: `op` answers a status and a JSON body. `op` is run on
/// its own task, so that a caller that goes away does not leave the key in
/// flight.
pub async fn run<Fut>(
    pool: &Pool,
    scope: String,
    key: String,
    hash: String,
    ttl: Duration,
    op: Fut,
) -> Result<Answer, BrokerError>
where
    Fut: Future<Output = Result<(u16, String), BrokerError>> + 'static,
{
    let now = now_ms();
    let row = IdempotencyRow {
        scope,
        idem_key: key,
        request_hash: hash,
        state: state::IN_FLIGHT.into(),
        status: None,
        response_body: None,
        created_at: now,
        expires_at: now + ttl.as_millis() as i64,
    };
    let claimed = {
        let (pool, row) = (pool.clone(), row.clone());
        actix_web::web::block(move || {
            let mut conn = pool.get()?;
            let _turn = pool.write_turn();
            let abandoned_before = row.created_at - ABANDONED_AFTER.as_millis() as i64;
            Ok::<_, BrokerError>(rows::claim(&mut conn, &row, abandoned_before)?)
        })
        .await??
    };
    if let Claimed::Taken(found) = claimed {
        return replay(found, &row.request_hash);
    }
    let pool = pool.clone();
    let task = actix_web::rt::spawn(async move {
        let result = op.await;
        let (pool2, row2) = (pool.clone(), row.clone());
        match &result {
            Ok((status, body)) if (200..300).contains(status) => {
                let (status, body) = (*status, body.clone());
                let stored = actix_web::web::block(move || {
                    let mut conn = pool2.get()?;
                    let _turn = pool2.write_turn();
                    Ok::<_, BrokerError>(rows::complete(
                        &mut conn,
                        &row2.scope,
                        &row2.idem_key,
                        row2.created_at,
                        i32::from(status),
                        &body,
                        row2.expires_at,
                    )?)
                })
                .await;
                match stored {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => log::warn!(
                        "the answer of an idempotent request came after its key was taken over"
                    ),
                    _ => log::warn!(
                        "could not store the answer of an idempotent request; its key is \
                         free again after {ABANDONED_AFTER:?}"
                    ),
                }
            }
            _ => {
                let released = actix_web::web::block(move || {
                    let mut conn = pool2.get()?;
                    let _turn = pool2.write_turn();
                    Ok::<_, BrokerError>(rows::release(
                        &mut conn,
                        &row2.scope,
                        &row2.idem_key,
                        row2.created_at,
                    )?)
                })
                .await;
                if !matches!(released, Ok(Ok(_))) {
                    log::warn!(
                        "could not give back the key of a failed idempotent request; \
                         it is free again after {ABANDONED_AFTER:?}"
                    );
                }
            }
        }
        result
    });
    let (status, body) = task
        .await
        .map_err(|_| BrokerError::Unavailable("the broker is shutting down".into()))??;
    Ok(Answer {
        status,
        body,
        replayed: false,
    })
}

fn replay(found: IdempotencyRow, hash: &str) -> Result<Answer, BrokerError> {
    if found.state != state::DONE {
        return Err(BrokerError::IdempotencyKeyInUse(format!(
            "a request with this {HEADER} is still being processed; retry later"
        )));
    }
    if found.request_hash != hash {
        return Err(BrokerError::IdempotencyKeyReused(format!(
            "this {HEADER} was already used for a different request"
        )));
    }
    match (found.status, found.response_body) {
        (Some(status), Some(body)) => Ok(Answer {
            status: u16::try_from(status).unwrap_or(500),
            body,
            replayed: true,
        }),
        _ => Err(BrokerError::Internal(
            "a stored idempotent answer is incomplete".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(validate_key(b"a").is_ok());
        assert!(validate_key(b"order 42/retry#1").is_ok());
        assert!(validate_key("k".repeat(255).as_bytes()).is_ok());
        for bad in [
            &b""[..],
            b"   ",
            b"tab\there",
            b"nul\0",
            "caf\u{e9}".as_bytes(),
            "k".repeat(256).as_bytes(),
        ] {
            let e = validate_key(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_idempotency_key");
            assert!(e.to_string().contains(HEADER));
        }
    }

    #[test]
    fn the_hash_depends_on_the_operation_and_the_content() {
        let a = request_hash("POST /v1/apps", r#"{"name":"a"}"#);
        assert_eq!(a, request_hash("POST /v1/apps", r#"{"name":"a"}"#));
        assert_ne!(a, request_hash("POST /v1/apps", r#"{"name":"b"}"#));
        assert_ne!(a, request_hash("POST /v1/webhook", r#"{"name":"a"}"#));
    }
}
