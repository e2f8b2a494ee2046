//! The app portal: the page at `/portal` (embedded in the binary, served
//! with a strict Content-Security-Policy), the admin endpoint that mints a
//! portal link for one app, and the check [`super::auth`] runs on a link's
//! token. See docs/portal.md.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Admin;
use super::ApiState;
use crate::db::schema::apps;
use crate::error::{BrokerError, ErrorBody};
use crate::portal_token::{self, PortalKey, TokenError};

/// A link's lifetime unless the request names one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The longest lifetime a link may have: a link is a bearer credential in
/// someone's mailbox or chat history, so it should not outlive a week.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Every header the page and its assets are served with.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

const INDEX_HTML: &str = include_str!("../../portal/index.html");
const APP_JS: &str = include_str!("../../portal/app.js");
const STYLE_CSS: &str = include_str!("../../portal/style.css");

/// What a portal token says about its bearer.
pub enum LinkCheck {
    /// A live link of this app.
    App(String),
    /// Not a usable link: why, for the 401.
    Refused(String),
    /// The database could not be asked whether the app still exists.
    Unavailable,
}

/// Checks a `wbp_` bearer token: signed by this broker's key, not expired,
/// for an app that still exists (a deleted app's links must die with it).
/// The token is never logged, whatever the outcome.
pub async fn check_link(state: &ApiState, token: &str) -> LinkCheck {
    let key = PortalKey::derive(&state.admin_token_digest);
    let app_id = match portal_token::verify(&key, token, crate::db::now_ms()) {
        Ok(app_id) => app_id,
        Err(e @ TokenError::Expired) | Err(e @ TokenError::Invalid) => {
            return LinkCheck::Refused(e.to_string())
        }
    };
    match app_exists(&state.pool, app_id.clone()).await {
        Ok(true) => LinkCheck::App(app_id),
        Ok(false) => LinkCheck::Refused("invalid token".into()),
        Err(_) => LinkCheck::Unavailable,
    }
}

async fn app_exists(pool: &crate::db::Pool, app_id: String) -> Result<bool, BrokerError> {
    super::query(pool.clone(), move |c| {
        apps::table
            .find(app_id)
            .count()
            .get_result::<i64>(c)
            .map(|n| n > 0)
    })
    .await
}

/// The optional body of `POST /v1/apps/{app_id}/portal-links`.
#[derive(Deserialize, ToSchema)]
pub struct PortalLinkBody {
    /// How long the link works, a duration like `15m`, `1h` or `2d`: from
    /// 1s to 7d; 1h unless given.
    #[schema(example = "1h")]
    ttl: Option<String>,
}

/// The answer of `POST /v1/apps/{app_id}/portal-links`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortalLink {
    /// The page, with the token in the fragment (`#token=wbp_...`), which
    /// browsers never send to a server.
    #[schema(example = "https://broker.example.com/portal#token=wbp_...")]
    pub url: String,
    /// When the link stops working, epoch milliseconds.
    #[schema(format = Int64)]
    pub expires_at: i64,
}

fn parse_ttl(raw: Option<&str>) -> Result<Duration, BrokerError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_TTL);
    };
    let bad = |why: String| BrokerError::bad_request("invalid_ttl", format!("ttl: {why}"));
    let ttl = crate::config::parse_duration(raw).map_err(bad)?;
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(bad(format!("must be from 1s to 7d, not `{}`", raw.trim())));
    }
    Ok(ttl)
}

/// The scheme and host the request came to: what the caller used, or what
/// a proxy in front says it used (`Forwarded`, `X-Forwarded-Host` and
/// `X-Forwarded-Proto`). Only the admin mints links, so the host is the
/// admin's own word, not a visitor's.
fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// `POST /v1/apps/{app_id}/portal-links [{"ttl"}]`: a link to the portal
/// for one app.
#[utoipa::path(
    post,
    path = "/v1/apps/{app_id}/portal-links",
    operation_id = "createPortalLink",
    tag = "admin",
    security(("admin_token" = [])),
    params(("app_id" = String, Path, description = "The app's id, `app_...`")),
    request_body(content = Option<PortalLinkBody>, description = "Optional: the link's lifetime"),
    responses(
        (status = 201, description = "A portal link for the app", body = PortalLink),
        (status = 400, description = "Malformed JSON, or a ttl that is not a duration from 1s to 7d (`invalid_ttl`)", body = ErrorBody),
        super::openapi::AdminFailures,
        (status = 404, description = "No such app", body = ErrorBody),
        (status = 413, description = "The body is over BROKER_MAX_BODY", body = ErrorBody),
        (status = 422, description = "A wrong type", body = ErrorBody),
    ),
)]
pub async fn create_link(
    _: Admin,
    req: HttpRequest,
    state: web::Data<ApiState>,
    app_id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, BrokerError> {
    let body: Option<PortalLinkBody> = super::optional_json(payload, state.max_body).await?;
    let ttl = parse_ttl(body.as_ref().and_then(|b| b.ttl.as_deref()))?;
    let app_id = app_id.into_inner();
    if !app_exists(&state.pool, app_id.clone()).await? {
        return Err(BrokerError::NotFound("app not found".into()));
    }
    let expires_at = crate::db::now_ms().saturating_add(ttl.as_millis() as i64);
    let key = PortalKey::derive(&state.admin_token_digest);
    let token = portal_token::mint(&key, &app_id, expires_at);
    Ok(HttpResponse::Created().json(PortalLink {
        url: format!("{}/portal#token={token}", base_url(&req)),
        expires_at,
    }))
}

/// Registers the page and its assets (outside `/v1`: they need no
/// credentials, and hold none).
pub fn pages(cfg: &mut web::ServiceConfig) {
    cfg.route("/portal", web::get().to(index))
        .route("/portal/", web::get().to(index))
        .route("/portal/app.js", web::get().to(app_js))
        .route("/portal/style.css", web::get().to(style_css));
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_defaults_to_an_hour_and_is_capped_at_a_week() {
        assert_eq!(parse_ttl(None).unwrap(), DEFAULT_TTL);
        assert_eq!(parse_ttl(Some("15m")).unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl(Some("7d")).unwrap(), MAX_TTL);
        for bad in ["", "soon", "8d", "0s", "500ms", "-1h"] {
            let e = parse_ttl(Some(bad)).unwrap_err();
            assert_eq!(e.code(), "invalid_ttl", "{bad}");
            assert!(e.to_string().starts_with("ttl: "), "{bad}: {e}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        assert!(INDEX_HTML.contains(r#"<script type="module" src="/portal/app.js"></script>"#));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains(" style="));
        let handlers = INDEX_HTML.split(" on").skip(1).filter(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert_eq!(handlers.count(), 0, "no inline event handlers");
        // API values reach the page as text: no HTML parsing sink at all.
        for sink in [
            ".innerHTML",
            ".outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!APP_JS.contains(sink), "{sink}");
        }
        assert!(!APP_JS.contains("http://") && !APP_JS.contains("https://"));
    }
}
