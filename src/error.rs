//! The one error type of the broker, and how each case reaches an HTTP
//! client: `{"error": {"code": "...", "message": "..."}}` with a fitting
//! status. Bad input is always a 4xx; only the broker's own faults are 5xx.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::DomainError;

/// Everything that can go wrong in a request or an in-process call.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Malformed input (400).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable reason.
        code: &'static str,
        /// What to fix.
        message: String,
    },
    /// Well-formed JSON of the wrong shape: a missing field, a wrong type (422).
    #[error("{0}")]
    Unprocessable(String),
    /// No or wrong credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials of the wrong kind (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource for this caller (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the resource's state (409).
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key already used for a different request (422).
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// A request with the same idempotency key is still in flight (409).
    #[error("{0}")]
    IdempotencyKeyInUse(String),
    /// A request body over the limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The database cannot be reached or the actors are gone (503).
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the broker itself (500).
    #[error("{0}")]
    Internal(String),
}

impl BrokerError {
    /// A 400 with its code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        BrokerError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The machine-readable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            BrokerError::BadRequest { code, .. } => code,
            BrokerError::Unprocessable(_) => "invalid_body",
            BrokerError::Unauthorized(_) => "unauthorized",
            BrokerError::Forbidden(_) => "forbidden",
            BrokerError::NotFound(_) => "not_found",
            BrokerError::Conflict(_) => "conflict",
            BrokerError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            BrokerError::IdempotencyKeyInUse(_) => "idempotency_key_in_use",
            BrokerError::PayloadTooLarge(_) => "payload_too_large",
            BrokerError::Unavailable(_) => "unavailable",
            BrokerError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for BrokerError {
    fn status_code(&self) -> StatusCode {
        match self {
            BrokerError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            BrokerError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            BrokerError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            BrokerError::Forbidden(_) => StatusCode::FORBIDDEN,
            BrokerError::NotFound(_) => StatusCode::NOT_FOUND,
            BrokerError::Conflict(_) => StatusCode::CONFLICT,
            BrokerError::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            BrokerError::IdempotencyKeyInUse(_) => StatusCode::CONFLICT,
            BrokerError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BrokerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            BrokerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let BrokerError::Unauthorized(_) = self {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        res.json(ErrorBody::new(self.code(), self.to_string()))
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_uri", "message": "uri scheme must be http or https"}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The code and message of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable reason, e.g. `invalid_json`, `invalid_event`,
    /// `invalid_uri`, `private_target`, `invalid_headers`, `invalid_page`, `invalid_length`,
    /// `invalid_query`, `invalid_channel`, `invalid_event_time`,
    /// `invalid_name`, `invalid_status`, `invalid_since`, `invalid_body`,
    /// `invalid_idempotency_key`, `idempotency_key_reused`,
    /// `idempotency_key_in_use`,
    /// `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `method_not_allowed`, `payload_too_large`, `unavailable`, `internal`.
    pub code: String,
    /// A human-readable explanation: what to fix.
    pub message: String,
}

impl ErrorBody {
    /// An error body with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

impl BrokerError {
    /// The error of a whole batch that failed, for each of its members: the
    /// batch could not be stored, so each is refused with 503.
    pub fn for_each_of_batch(&self) -> BrokerError {
        match self {
            BrokerError::Unavailable(m) => BrokerError::Unavailable(m.clone()),
            other => BrokerError::Unavailable(other.to_string()),
        }
    }
}

impl From<DomainError> for BrokerError {
    fn from(e: DomainError) -> Self {
        let code = match e {
            DomainError::UnknownEvent(_) | DomainError::EmptyEvents => "invalid_event",
            DomainError::InvalidUri(_) => "invalid_uri",
            DomainError::PrivateTarget => "private_target",
            DomainError::InvalidHeaders(_) => "invalid_headers",
            DomainError::InvalidRateLimit(_) => "invalid_rate_limit",
            DomainError::InvalidMaxConcurrency(_) => "invalid_max_concurrency",
        };
        BrokerError::bad_request(code, e.to_string())
    }
}

impl From<diesel::result::Error> for BrokerError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        crate::metrics::metrics().database_errors.inc();
        match e {
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => {
                log::warn!("database unreachable: {e}");
                BrokerError::Unavailable("the database is unreachable; try again".into())
            }
            Error::DatabaseError(..) => {
                // Connection loss shows up under several kinds (a restarted
                // MariaDB says "server has gone away"): the client should
                // try again, not report a bug.
                log::warn!("database error: {e}");
                BrokerError::Unavailable("the database failed the request; try again".into())
            }
            other => {
                log::error!("database error: {other}");
                BrokerError::Internal("a database error occurred".into())
            }
        }
    }
}

impl From<diesel::r2d2::PoolError> for BrokerError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        crate::metrics::metrics().database_errors.inc();
        log::warn!("no database connection: {e}");
        BrokerError::Unavailable("the database is unreachable; try again".into())
    }
}

impl From<actix::MailboxError> for BrokerError {
    fn from(e: actix::MailboxError) -> Self {
        log::error!("actor unavailable: {e}");
        BrokerError::Unavailable("the broker is shutting down or overloaded".into())
    }
}

impl From<actix_web::error::BlockingError> for BrokerError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        BrokerError::Unavailable("the broker is shutting down".into())
    }
}
