//! Portal link tokens: `wbp_<payload>.<sig>`, where `payload` is the
//! base64url (no padding) of `{"app":"app_...","exp":<epoch ms>}` and `sig`
//! the base64url HMAC-SHA256 of `wbp_<payload>`.
//!
//! The signing key is derived from the admin token, so every instance that
//! shares BROKER_ADMIN_TOKEN checks a link with no database round trip and
//! no table of issued links; changing the admin token revokes every link.
//! The key is an HMAC of a fixed label under the admin token's SHA-256 (the
//! digest the API state already keeps), so the admin token itself never
//! signs anything a browser sees.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What every portal token starts with.
pub const PREFIX: &str = "wbp_";

/// Separates the key from any other use of the admin token's digest.
const KEY_LABEL: &[u8] = b"webhook-broker portal-link v1";

/// The longest token [`verify`] reads: an app id is short, so anything
/// longer is not ours and is refused before any decoding.
const MAX_TOKEN_LEN: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// The key portal tokens are signed with, from the admin token's SHA-256.
#[derive(Clone)]
pub struct PortalKey([u8; 32]);

impl PortalKey {
    /// The key for the admin token whose SHA-256 is `admin_token_digest`.
    pub fn derive(admin_token_digest: &[u8; 32]) -> PortalKey {
        let mut mac = HmacSha256::new_from_slice(admin_token_digest).expect("any key length");
        mac.update(KEY_LABEL);
        PortalKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self, signed: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("any key length");
        mac.update(signed.as_bytes());
        mac
    }
}

impl std::fmt::Debug for PortalKey {
    // The key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortalKey(***)")
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    app: String,
    exp: i64,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Well signed, but past its expiry.
    #[error("portal link expired; ask for a new one")]
    Expired,
    /// Not a token this broker signed.
    #[error("invalid token")]
    Invalid,
}

/// A new token for `app_id`, valid until `expires_at_ms`.
pub fn mint(key: &PortalKey, app_id: &str, expires_at_ms: i64) -> String {
    let claims = serde_json::to_vec(&Claims {
        app: app_id.to_owned(),
        exp: expires_at_ms,
    })
    .expect("claims serialize");
    let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(claims));
    let sig = URL_SAFE_NO_PAD.encode(key.mac(&signed).finalize().into_bytes());
    format!("{signed}.{sig}")
}

/// The app a token was minted for, if it is ours and not expired at
/// `now_ms`. The signature is checked (in constant time) before the
/// payload is even parsed, so a forged payload is never read.
pub fn verify(key: &PortalKey, token: &str, now_ms: i64) -> Result<String, TokenError> {
    if token.len() > MAX_TOKEN_LEN || !token.starts_with(PREFIX) {
        return Err(TokenError::Invalid);
    }
    let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Invalid)?;
    key.mac(signed)
        .verify_slice(&sig)
        .map_err(|_| TokenError::Invalid)?;
    let payload = URL_SAFE_NO_PAD
        .decode(&signed[PREFIX.len()..])
        .map_err(|_| TokenError::Invalid)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
    if now_ms >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims.app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(admin: &str) -> PortalKey {
        PortalKey::derive(&crate::api::auth::digest(admin))
    }

    #[test]
    fn a_minted_token_verifies_to_its_app_until_it_expires() {
        let k = key("admin-token");
        let t = mint(&k, "app_123", 1_000);
        assert!(t.starts_with("wbp_"));
        assert_eq!(verify(&k, &t, 999), Ok("app_123".to_owned()));
        assert_eq!(verify(&k, &t, 1_000), Err(TokenError::Expired));
        assert_eq!(verify(&k, &t, 5_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_signed_under_another_admin_token_is_invalid() {
        let t = mint(&key("one-admin-token"), "app_123", i64::MAX);
        assert_eq!(
            verify(&key("another-admin-token"), &t, 0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_changed_payload_breaks_the_signature() {
        let k = key("admin-token");
        let t = mint(&k, "app_123", 1_000);
        let (_, sig) = t.rsplit_once('.').unwrap();
        let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"app":"app_999","exp":9999999999999}"#);
        let forged = format!("{PREFIX}{forged_claims}.{sig}");
        assert_eq!(verify(&k, &forged, 0), Err(TokenError::Invalid));
        // An expired token cannot be made fresh either: that is the payload too.
        let later = URL_SAFE_NO_PAD.encode(br#"{"app":"app_123","exp":9999999999999}"#);
        assert_eq!(
            verify(&k, &format!("{PREFIX}{later}.{sig}"), 2_000),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        let k = key("admin-token");
        for t in [
            "",
            "wbp_",
            "wbp_.",
            "wbp_abc",
            "wbp_abc.def",
            "wbk_abc.def",
            "wbp_!!!.???",
            &format!("wbp_{}", "a".repeat(600)),
        ] {
            assert_eq!(verify(&k, t, 0), Err(TokenError::Invalid), "{t}");
        }
    }

    #[test]
    fn the_key_does_not_show_in_debug_output() {
        assert_eq!(format!("{:?}", key("admin-token")), "PortalKey(***)");
    }
}
