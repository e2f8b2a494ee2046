//! Standard Webhooks signing (<https://www.standardwebhooks.com/>): the
//! secret format and the `webhook-signature` header value. Pure functions,
//! so that the delivery actor only wires them up.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The prefix every webhook secret carries.
pub const SECRET_PREFIX: &str = "whsec_";

/// How many random bytes a new secret holds (the spec asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A fresh secret: `whsec_` followed by base64 of random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

/// The HMAC key a secret stands for: the base64-decoded part after the
/// prefix. A secret that is not valid base64 is used as raw bytes, which is
/// what the reference libraries do with such keys too.
pub fn signing_key(secret: &str) -> Vec<u8> {
    let body = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    B64.decode(body)
        .unwrap_or_else(|_| body.as_bytes().to_vec())
}

/// One `v1,<base64>` signature of `{id}.{timestamp}.{body}`.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per key, separated
/// by spaces, as receivers accept during a secret rotation.
pub fn signature_header(keys: &[&[u8]], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| sign(k, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_standard_webhooks_test_vector_is_reproduced() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secrets_have_the_prefix_and_enough_entropy() {
        let a = generate_secret();
        let b = generate_secret();
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(signing_key(&a).len(), SECRET_BYTES);
        assert_ne!(a, b);
    }

    #[test]
    fn a_header_with_two_keys_carries_two_signatures() {
        let header = signature_header(&[b"one", b"two"], "msg_1", 1, b"{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(b"one", "msg_1", 1, b"{}"));
        assert_eq!(parts[1], sign(b"two", "msg_1", 1, b"{}"));
    }
}
