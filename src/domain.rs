//! Validated domain values. Input is parsed into these newtypes once, at the
//! edge, so that the rest of the broker never sees an unchecked string.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use serde_json::{Map, Value};

/// The longest webhook URI accepted, in bytes.
pub const MAX_URI_LEN: usize = 2048;

/// The most custom headers a webhook may have.
pub const MAX_HEADERS: usize = 20;

/// The longest custom header value accepted, in characters.
pub const MAX_HEADER_VALUE_LEN: usize = 1024;

/// Header names a webhook may not set: the broker's own, and those that
/// belong to the connection rather than the message (hop-by-hop). Names
/// starting with `webhook-` are refused as well (see [`CustomHeaders`]).
pub const RESERVED_HEADERS: [&str; 13] = [
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// A channel lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A channel started broadcasting.
    ChannelLive,
    /// The user interrupted the broadcast.
    ChannelStop,
    /// The broadcast is over for good.
    ChannelEnded,
}

impl EventKind {
    /// Every event, in the order the API lists them.
    pub const ALL: [EventKind; 3] = [
        EventKind::ChannelLive,
        EventKind::ChannelStop,
        EventKind::ChannelEnded,
    ];

    /// The wire name of the event.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ChannelLive => "channel_live",
            EventKind::ChannelStop => "channel_stop",
            EventKind::ChannelEnded => "channel_ended",
        }
    }

    /// Parses a wire name; surrounding spaces are tolerated because the seed
    /// document itself writes `" channel_live "`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        match raw.trim() {
            "channel_live" => Ok(EventKind::ChannelLive),
            "channel_stop" => Ok(EventKind::ChannelStop),
            "channel_ended" => Ok(EventKind::ChannelEnded),
            other => Err(DomainError::UnknownEvent(other.to_owned())),
        }
    }

    fn bit(self) -> u8 {
        match self {
            EventKind::ChannelLive => 1,
            EventKind::ChannelStop => 2,
            EventKind::ChannelEnded => 4,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A non-empty set of events a webhook subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventSet(u8);

impl EventSet {
    /// Every event.
    pub fn all() -> Self {
        EventSet(7)
    }

    /// Parses `"all"` or a comma-separated list such as
    /// `"channel_live,channel_ended"`.
    pub fn parse_list(raw: &str) -> Result<Self, DomainError> {
        Self::from_names(raw.split(','))
    }

    /// Parses a sequence of names; `"all"` among them stands for every event.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, DomainError> {
        let mut bits = 0u8;
        for name in names {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            if name == "all" {
                bits |= Self::all().0;
            } else {
                bits |= EventKind::parse(name)?.bit();
            }
        }
        if bits == 0 {
            return Err(DomainError::EmptyEvents);
        }
        Ok(EventSet(bits))
    }

    /// Whether the set holds `kind`.
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether the two sets share an event.
    pub fn intersects(self, other: EventSet) -> bool {
        self.0 & other.0 != 0
    }

    /// The set without the events of `other`; `None` when nothing is left.
    pub fn without(self, other: EventSet) -> Option<EventSet> {
        let left = self.0 & !other.0;
        (left != 0).then_some(EventSet(left))
    }

    /// The events of the set, in API order.
    pub fn kinds(self) -> Vec<EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(|k| self.contains(*k))
            .collect()
    }

    /// The storage form: wire names joined by commas.
    pub fn to_storage(self) -> String {
        self.kinds()
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A webhook target that is an absolute http(s) URL and, unless private
/// targets are allowed, does not point into the broker's own network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUri {
    raw: String,
    url: url::Url,
}

impl WebhookUri {
    /// Parses and checks a URI as a client sent it.
    pub fn parse(raw: &str, allow_private: bool) -> Result<Self, DomainError> {
        if raw.is_empty() {
            return Err(DomainError::InvalidUri("uri must not be empty".into()));
        }
        if raw.len() > MAX_URI_LEN {
            return Err(DomainError::InvalidUri(format!(
                "uri must be at most {MAX_URI_LEN} characters"
            )));
        }
        // The URL parser would quietly percent-encode spaces; a URI a user
        // typed with a space in it is a mistake we should show them.
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(DomainError::InvalidUri(
                "uri must not contain spaces or control characters".into(),
            ));
        }
        let url = url::Url::parse(raw)
            .map_err(|e| DomainError::InvalidUri(format!("uri is not an absolute URL: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(DomainError::InvalidUri(
                "uri scheme must be http or https".into(),
            ));
        }
        let host = url
            .host()
            .ok_or_else(|| DomainError::InvalidUri("uri must have a host".into()))?;
        if !allow_private {
            let private = match host {
                url::Host::Domain(d) => is_local_hostname(d),
                url::Host::Ipv4(ip) => !is_public_ip(IpAddr::V4(ip)),
                url::Host::Ipv6(ip) => !is_public_ip(IpAddr::V6(ip)),
            };
            if private {
                return Err(DomainError::PrivateTarget);
            }
        }
        Ok(WebhookUri {
            raw: raw.to_owned(),
            url,
        })
    }

    /// The URI exactly as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parsed, normalised URL (what the broker connects to).
    pub fn url(&self) -> &url::Url {
        &self.url
    }
}

/// The extra headers a webhook sends on every delivery attempt: at most
/// [`MAX_HEADERS`], each name an HTTP token (RFC 9110 `tchar`s) that is not
/// [reserved](RESERVED_HEADERS) and does not start with `webhook-` (any
/// case), each value a string of at most [`MAX_HEADER_VALUE_LEN`]
/// characters without CR, LF or other control characters but tab. Names
/// are kept as written; two that differ only in case are refused. They are
/// not signed: the signature covers the id, the timestamp and the body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CustomHeaders(BTreeMap<String, String>);

impl CustomHeaders {
    /// Checks the `headers` object of a request.
    pub fn parse(raw: &Map<String, Value>) -> Result<Self, DomainError> {
        let bad = |m: String| Err(DomainError::InvalidHeaders(m));
        if raw.len() > MAX_HEADERS {
            return bad(format!(
                "headers may have at most {MAX_HEADERS} entries, not {}",
                raw.len()
            ));
        }
        let mut headers = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in raw {
            // http 1's parser accepts exactly the RFC 9110 token characters.
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                // Control characters are shown escaped, the rest as sent.
                let shown: String = name
                    .chars()
                    .map(|c| match c.is_control() {
                        true => c.escape_debug().to_string(),
                        false => c.to_string(),
                    })
                    .collect();
                return bad(format!("header name `{shown}` is not a valid HTTP token"));
            }
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("webhook-") || RESERVED_HEADERS.contains(&lower.as_str()) {
                return bad(format!(
                    "header `{name}` is reserved: webhook-*, content-type, content-length, \
                     host, user-agent, connection, transfer-encoding and hop-by-hop \
                     headers cannot be set"
                ));
            }
            if !seen.insert(lower) {
                return bad(format!(
                    "header `{name}` is given twice (names ignore case)"
                ));
            }
            let Value::String(value) = value else {
                return bad(format!("the value of header `{name}` must be a string"));
            };
            if value.chars().count() > MAX_HEADER_VALUE_LEN {
                return bad(format!(
                    "the value of header `{name}` is over {MAX_HEADER_VALUE_LEN} characters"
                ));
            }
            if value.contains(['\r', '\n']) {
                return bad(format!(
                    "the value of header `{name}` must not contain CR or LF"
                ));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return bad(format!(
                    "the value of header `{name}` must not contain control characters"
                ));
            }
            headers.insert(name.clone(), value.clone());
        }
        Ok(CustomHeaders(headers))
    }

    /// Reads the storage form, a JSON object (empty text counts as none).
    /// What was stored was checked when written, so only the shape is
    /// checked again.
    pub fn from_storage(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            return Ok(CustomHeaders::default());
        }
        serde_json::from_str(raw)
            .map(CustomHeaders)
            .map_err(|e| format!("stored headers are not a JSON object of strings: {e}"))
    }

    /// The storage form: a JSON object, `{}` when there are none.
    pub fn to_storage(&self) -> String {
        serde_json::to_string(&self.0).expect("a map of strings serializes")
    }

    /// The headers, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers as a map, name to value.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// Whether a host name names this machine whatever DNS says.
fn is_local_hostname(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Whether an address is a public unicast address a webhook may target.
///
/// Refused: loopback, private (RFC 1918), link-local (including cloud
/// metadata at 169.254.169.254), CGNAT, unspecified, broadcast, multicast,
/// documentation, reserved, unique-local, and IPv6 forms that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4), which could smuggle any of
/// the above.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240; // reserved
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let refused = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique-local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation 2001:db8::/32
        || (seg[0] == 0x3fff && seg[1] & 0xf000 == 0) // documentation 3fff::/20 (RFC 9637)
        || (seg[0] == 0x2001 && seg[1] == 0x0002 && seg[2] == 0) // benchmarking 2001:2::/48
        || seg[..4] == [0x0100, 0, 0, 0] // discard-only 100::/64
        || (seg[0] == 0x0064 && seg[1] == 0xff9b) // NAT64
        || seg[0] == 0x2002 // 6to4
        || seg[..5] == [0, 0, 0, 0, 0]; // IPv4-mapped ::ffff:0:0/96 and -compatible ::/96
    !refused
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// An event name outside the known set.
    #[error(
        "unknown event `{0}`; known events are channel_live, channel_stop, channel_ended and all"
    )]
    UnknownEvent(String),
    /// No event at all.
    #[error("event must name at least one event")]
    EmptyEvents,
    /// A malformed URI.
    #[error("{0}")]
    InvalidUri(String),
    /// A URI that points at a private or local address.
    #[error("uri points at a private, loopback or link-local address; set BROKER_ALLOW_PRIVATE_TARGETS=true to allow it")]
    PrivateTarget,
    /// A custom header that cannot be sent.
    #[error("{0}")]
    InvalidHeaders(String),
    /// A `rateLimit` that is not a positive integer or null.
    #[error("rateLimit must be an integer of at least 1 (deliveries per second), or null for unlimited, not {0}")]
    InvalidRateLimit(String),
    /// A `maxConcurrency` outside 1..=1000.
    #[error("maxConcurrency must be an integer from 1 to 1000 (requests in flight), not {0}")]
    InvalidMaxConcurrency(String),
}

/// Gives a status enum its one word per variant (`as_str`, `parse`) and
/// Diesel's `Text` mapping on every backend (the `MultiConnection` one
/// included): the column holds the same lowercase word the API writes.
macro_rules! stored_as_text {
    ($t:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $t {
            /// The stored and wire form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$variant => $word,)+
                }
            }

            /// The stored and wire form back; `None` for anything else.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($word => Some($t::$variant),)+
                    _ => None,
                }
            }
        }

        impl<DB: diesel::backend::Backend> diesel::serialize::ToSql<diesel::sql_types::Text, DB>
            for $t
        where
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, DB>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl<DB: diesel::backend::Backend> diesel::deserialize::FromSql<diesel::sql_types::Text, DB>
            for $t
        where
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let stored = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    DB,
                >>::from_sql(bytes)?;
                <$t>::parse(&stored).ok_or_else(|| {
                    format!("unknown {} `{stored}` in the database", stringify!($t)).into()
                })
            }
        }
    };
}

/// Whether a webhook receives deliveries: `webhooks.status`, and the
/// webhook's `status` in the API.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    utoipa::ToSchema,
    diesel::AsExpression,
    diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Receives deliveries.
    Enabled,
    /// Receives nothing; its pending deliveries are kept.
    Disabled,
}

stored_as_text!(WebhookStatus {
    Enabled => "enabled",
    Disabled => "disabled",
});

/// Where a delivery stands: `deliveries.status`, and a delivery's
/// `status` in the API.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    utoipa::ToSchema,
    diesel::AsExpression,
    diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Retries are exhausted, or the receiver refused it for good.
    Failed,
}

stored_as_text!(DeliveryStatus {
    Pending => "pending",
    Succeeded => "succeeded",
    Failed => "failed",
});

/// What an API key may do: `api_keys.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum KeyKind {
    /// An app's key: everything the app may do.
    App,
    /// An ingest key: `POST /v1/events` only.
    Ingest,
}

stored_as_text!(KeyKind {
    App => "app",
    Ingest => "ingest",
});

/// The most requests in flight to one webhook that `maxConcurrency` may allow.
pub const MAX_CONCURRENCY: u32 = 1000;
/// `maxConcurrency` when none is given: enough to keep a receiver with a
/// few milliseconds of latency busy at thousands of deliveries a second,
/// while a slow receiver never sees more than a modest pool's worth of
/// connections from the broker (Svix and Convoy's defaults are of the same
/// order).
pub const DEFAULT_CONCURRENCY: u32 = 32;

/// How hard a webhook's receiver may be driven: at most `rate_limit`
/// deliveries in any one second (`None`: unlimited), and at most
/// `max_concurrency` requests open at once. Held-back deliveries wait;
/// their wait is not an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// `rateLimit`: deliveries per second, at least 1.
    pub rate_limit: Option<u32>,
    /// `maxConcurrency`: requests in flight, 1 to [`MAX_CONCURRENCY`].
    pub max_concurrency: u32,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            rate_limit: None,
            max_concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl Throttle {
    /// `rateLimit` as sent: an integer of at least 1, or `null` for
    /// unlimited.
    pub fn parse_rate_limit(v: &serde_json::Value) -> Result<Option<u32>, DomainError> {
        match v {
            serde_json::Value::Null => Ok(None),
            v => match v.as_u64() {
                Some(n) if (1..=u32::MAX as u64).contains(&n) => Ok(Some(n as u32)),
                _ => Err(DomainError::InvalidRateLimit(v.to_string())),
            },
        }
    }

    /// `maxConcurrency` as sent: an integer from 1 to [`MAX_CONCURRENCY`].
    pub fn parse_max_concurrency(v: &serde_json::Value) -> Result<u32, DomainError> {
        match v.as_u64() {
            Some(n) if (1..=MAX_CONCURRENCY as u64).contains(&n) => Ok(n as u32),
            _ => Err(DomainError::InvalidMaxConcurrency(v.to_string())),
        }
    }

    /// As stored: `rate_limit` NULL or positive, `max_concurrency` in range
    /// (anything else, written by hand, falls back to the defaults).
    pub fn from_storage(rate_limit: Option<i32>, max_concurrency: i32) -> Self {
        Throttle {
            rate_limit: rate_limit.filter(|n| *n >= 1).map(|n| n as u32),
            max_concurrency: if (1..=MAX_CONCURRENCY as i32).contains(&max_concurrency) {
                max_concurrency as u32
            } else {
                DEFAULT_CONCURRENCY
            },
        }
    }
}

/// The rate rule: whether one more delivery may start at `now`, given the
/// start times of the last ones (`recent`, oldest first), at `rate` per
/// second. Answers `Ok` or when the next slot opens. Two conditions: no
/// second holds more than `rate` starts, and starts are spread at least
/// `1/rate` apart, so that the receiver sees a steady rate rather than a
/// burst at the top of each second (bursts that arrive late would stack
/// up on the next ones). `recent` is trimmed to the last second.
pub fn rate_slot(
    recent: &mut std::collections::VecDeque<std::time::Instant>,
    rate: u32,
    now: std::time::Instant,
) -> Result<(), std::time::Instant> {
    let second = std::time::Duration::from_secs(1);
    while recent
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= second)
    {
        recent.pop_front();
    }
    let mut next = now;
    if recent.len() >= rate as usize {
        // The oldest of the last `rate` starts leaves the window first.
        next = next.max(recent[recent.len() - rate as usize] + second);
    }
    if let Some(last) = recent.back() {
        next = next.max(*last + second / rate.max(1));
    }
    if next <= now {
        Ok(())
    } else {
        Err(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_back_what_it_writes_and_nothing_else() {
        for s in [WebhookStatus::Enabled, WebhookStatus::Disabled] {
            assert_eq!(WebhookStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for k in [KeyKind::App, KeyKind::Ingest] {
            assert_eq!(KeyKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(WebhookStatus::parse("Enabled"), None);
        assert_eq!(DeliveryStatus::parse("done"), None);
        assert_eq!(KeyKind::parse("admin"), None);
    }

    fn headers(v: Value) -> Result<CustomHeaders, DomainError> {
        CustomHeaders::parse(v.as_object().expect("an object"))
    }

    fn refusal(v: Value) -> String {
        match headers(v) {
            Err(DomainError::InvalidHeaders(m)) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn custom_headers_are_kept_as_written_and_stored_as_json() {
        let h = headers(
            serde_json::json!({"X-Api-Key": "k 1", "x_trace": "", "a!#$%&'*+.^_`|~": "\t"}),
        )
        .unwrap();
        assert_eq!(h.as_map()["X-Api-Key"], "k 1");
        let back = CustomHeaders::from_storage(&h.to_storage()).unwrap();
        assert_eq!(back, h);
        assert_eq!(CustomHeaders::default().to_storage(), "{}");
        assert!(CustomHeaders::from_storage("").unwrap().is_empty());
    }

    #[test]
    fn every_reserved_header_name_is_refused_in_any_case_and_named() {
        let mut names: Vec<String> = RESERVED_HEADERS.iter().map(|n| n.to_string()).collect();
        names.extend(
            [
                "Webhook-Id",
                "webhook-signature",
                "WEBHOOK-x",
                "Content-Type",
                "TE",
            ]
            .map(String::from),
        );
        for name in names {
            let message = refusal(serde_json::json!({ name.clone(): "v" }));
            assert!(message.contains(&format!("`{name}`")), "{message}");
        }
        assert!(headers(serde_json::json!({"webhook": "v", "x-webhook-id": "v"})).is_ok());
    }

    #[test]
    fn header_names_must_be_http_tokens() {
        for name in ["", "a b", "a:b", "a\"b", "a(b)", "é", "a/b", "a\nb", "a@b"] {
            refusal(serde_json::json!({ name: "v" }));
        }
    }

    #[test]
    fn header_values_are_strings_of_at_most_1024_characters_without_cr_or_lf() {
        assert!(headers(serde_json::json!({"x": "€".repeat(1024)})).is_ok());
        assert!(refusal(serde_json::json!({"x": "a".repeat(1025)})).contains("`x`"));
        for v in ["a\r\nb: c", "a\n", "\r", "a\u{0}b", "a\u{7f}"] {
            assert!(refusal(serde_json::json!({ "x-v": v })).contains("`x-v`"));
        }
        for v in [
            serde_json::json!(1),
            serde_json::json!(null),
            serde_json::json!(["a"]),
        ] {
            refusal(serde_json::json!({ "x": v }));
        }
    }

    #[test]
    fn at_most_20_headers_and_no_name_twice() {
        let n = |count: usize| {
            Value::Object(
                (0..count)
                    .map(|i| (format!("x-{i}"), Value::from("v")))
                    .collect(),
            )
        };
        assert!(headers(n(20)).is_ok());
        assert!(refusal(n(21)).contains("at most 20"));
        assert!(refusal(serde_json::json!({"X-A": "1", "x-a": "2"})).contains("twice"));
    }

    #[test]
    fn all_expands_to_every_event() {
        let set = EventSet::parse_list("all").unwrap();
        assert_eq!(set.kinds(), EventKind::ALL.to_vec());
    }

    #[test]
    fn a_comma_list_keeps_api_order_and_ignores_spaces() {
        let set = EventSet::parse_list(" channel_ended , channel_live").unwrap();
        assert_eq!(
            set.kinds(),
            vec![EventKind::ChannelLive, EventKind::ChannelEnded]
        );
        assert_eq!(set.to_storage(), "channel_live,channel_ended");
    }

    #[test]
    fn unknown_and_empty_event_lists_are_refused() {
        assert!(matches!(
            EventSet::parse_list("channel_live,channel_paused"),
            Err(DomainError::UnknownEvent(e)) if e == "channel_paused"
        ));
        assert_eq!(EventSet::parse_list(""), Err(DomainError::EmptyEvents));
        assert_eq!(EventSet::parse_list(" , "), Err(DomainError::EmptyEvents));
    }

    #[test]
    fn removing_events_leaves_the_rest_or_nothing() {
        let set = EventSet::parse_list("channel_live,channel_stop").unwrap();
        let stop = EventSet::parse_list("channel_stop").unwrap();
        assert_eq!(
            set.without(stop).unwrap().kinds(),
            vec![EventKind::ChannelLive]
        );
        assert_eq!(set.without(set), None);
    }

    #[test]
    fn public_http_and_https_uris_are_accepted_as_written() {
        for raw in [
            "https://example.com/hook",
            "http://93.184.216.34:8080/x?y=1",
        ] {
            assert_eq!(WebhookUri::parse(raw, false).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn malformed_uris_are_refused() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URI_LEN));
        for raw in [
            "",
            "example.com/hook",
            "/relative",
            "ftp://example.com/",
            "https://exa mple.com/",
            "https://example.com/a b",
            " https://example.com/",
            "http://",
            long.as_str(),
        ] {
            assert!(
                WebhookUri::parse(raw, true).is_err(),
                "{raw:?} was accepted"
            );
        }
    }

    #[test]
    fn private_targets_are_refused_in_every_spelling() {
        for raw in [
            "http://localhost/",
            "http://LOCALHOST.:8080/",
            "http://api.localhost/",
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b::a00:1]/",
        ] {
            assert_eq!(
                WebhookUri::parse(raw, false),
                Err(DomainError::PrivateTarget),
                "{raw} was not refused"
            );
            assert!(
                WebhookUri::parse(raw, true).is_ok(),
                "{raw} refused even when allowed"
            );
        }
    }

    #[test]
    fn reserved_ranges_fail_the_ip_policy() {
        for ip in [
            "255.255.255.255", // broadcast
            "198.18.0.1",      // benchmarking
            "198.19.255.254",
            "192.0.0.8", // IETF protocol assignments
            "192.0.2.1", // documentation
            "198.51.100.7",
            "203.0.113.9",
            "240.0.0.1", // reserved
            "224.0.0.251",
            "100.127.255.255", // CGNAT
            "169.254.169.254",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff:ffff::1",
            "2001:2::1",
            "100::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "2002:a00:1::1",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip} passed");
        }
    }

    #[test]
    fn public_addresses_pass_the_ip_policy() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "100.128.0.1",
            "198.20.0.1",
            "2001:4860::8888",
            "3ffe::1",
            "3fff:1000::1",
            "2001:3::1",
            "101::1",
        ] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn rate_limit_is_a_positive_integer_or_null() {
        use serde_json::json;
        assert_eq!(Throttle::parse_rate_limit(&json!(null)).unwrap(), None);
        assert_eq!(Throttle::parse_rate_limit(&json!(50)).unwrap(), Some(50));
        for bad in [json!(0), json!(-1), json!(1.5), json!("50"), json!(true)] {
            let e = Throttle::parse_rate_limit(&bad).unwrap_err();
            assert!(matches!(e, DomainError::InvalidRateLimit(_)), "{bad}");
        }
    }

    #[test]
    fn max_concurrency_is_between_1_and_1000() {
        use serde_json::json;
        assert_eq!(Throttle::parse_max_concurrency(&json!(1)).unwrap(), 1);
        assert_eq!(Throttle::parse_max_concurrency(&json!(1000)).unwrap(), 1000);
        for bad in [json!(0), json!(1001), json!(null), json!(2.5), json!("2")] {
            let e = Throttle::parse_max_concurrency(&bad).unwrap_err();
            assert!(matches!(e, DomainError::InvalidMaxConcurrency(_)), "{bad}");
        }
        assert_eq!(Throttle::default().max_concurrency, 32);
        assert_eq!(Throttle::from_storage(Some(0), 0), Throttle::default());
    }

    #[test]
    fn no_second_holds_more_than_the_rate() {
        use std::collections::VecDeque;
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut recent = VecDeque::new();
        assert_eq!(rate_slot(&mut recent, 4, t0), Ok(()));
        recent.push_back(t0);
        // Spread out: the next start waits a quarter of a second.
        assert_eq!(rate_slot(&mut recent, 4, t0 + ms(10)), Err(t0 + ms(250)));
        for i in 1..4 {
            assert_eq!(rate_slot(&mut recent, 4, t0 + ms(250 * i)), Ok(()));
            recent.push_back(t0 + ms(250 * i));
        }
        // A fifth within the same second waits for the first to leave it.
        assert_eq!(rate_slot(&mut recent, 4, t0 + ms(999)), Err(t0 + ms(1000)));
        assert_eq!(rate_slot(&mut recent, 4, t0 + ms(1000)), Ok(()));
        assert_eq!(recent.len(), 3, "the first left the window");
    }
}
