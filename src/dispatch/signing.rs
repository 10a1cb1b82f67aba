//! Standard Webhooks signatures, as the specification and its reference libraries do
//! them (spec: standard-webhooks/standard-webhooks `spec/standard-webhooks.md`;
//! reference verifier: `libraries/python/standardwebhooks/webhooks.py`).
//!
//! Each request carries `webhook-id`, `webhook-timestamp` (Unix seconds) and, when the
//! rule has secrets, `webhook-signature`: `v1,<base64 HMAC-SHA256(key,
//! "id.timestamp.body")>`, one such entry per secret, separated by spaces (the spec's
//! "zero downtime secret rotation": the receiver tries each until one matches).
//!
//! - The id must not contain `.` (it is the first field of the signed content) and, as
//!   every header value, must be ASCII: a receiver reads header bytes as Latin-1, so a
//!   UTF-8 rule name would be signed as one text and checked as another. [`message_id`]
//!   makes `msg_` + 32 hex digits of a hash of the job's idempotency key (event id and
//!   rule name): the same on every retry and restart, whatever the rule is called.
//! - Secrets are `whsec_` + base64 of the key. The Python library strips the prefix and
//!   decodes with padding added (`b64decode(secret + "==")`), so padded and unpadded
//!   secrets both work, and it refuses an empty key (`EmptyWebhookSecretError`).
//!   `rules::secret` does the same when rules load, refusing then what would fail
//!   later. The spec asks for keys of 24 to 64 bytes; the libraries accept shorter
//!   ones, so a short key is only a warning.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

pub use crate::rules::secret::{decode_secret, key_warning};

/// The `webhook-id` sent for the job with idempotency key `job_key`: `msg_` and 32 hex
/// digits, ASCII without `.`, the same on every attempt.
pub fn message_id(job_key: &str) -> String {
    let digest = Sha256::digest(job_key.as_bytes());
    format!("msg_{}", hex::encode(&digest[..16]))
}

/// The `webhook-signature` value: one `v1,` signature per key, space-separated.
pub fn signature_header(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| sign_with_key(key, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `v1,<signature>` for one message, with the key of a `whsec_` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    Ok(sign_with_key(&decode_secret(secret)?, id, timestamp, body))
}

fn sign_with_key(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's published example (standard-webhooks, spec and libraries).
    #[test]
    fn standard_webhooks_test_vector() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_padded_or_not_decode_alike() {
        // 25 bytes: base64 ends in `=` when padded
        let padded = format!("whsec_{}", STANDARD.encode([7u8; 25]));
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=').to_owned();
        assert_eq!(decode_secret(&padded).unwrap(), vec![7u8; 25]);
        assert_eq!(decode_secret(&unpadded).unwrap(), vec![7u8; 25]);
    }

    #[test]
    fn bad_secrets_are_errors() {
        assert!(decode_secret("whsec_***not base64***").is_err());
        assert!(decode_secret("whsec_").unwrap_err().contains("empty"));
        assert!(decode_secret("whsec_=").unwrap_err().contains("empty"));
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(key_warning(&[1; 8]).is_some());
        assert!(key_warning(&[1; 24]).is_none());
    }

    #[test]
    fn message_ids_are_ascii_without_dots() {
        let id = message_id("0123abcd.Rückruf für Kunden.mit Punkt");
        assert!(id.starts_with("msg_") && id.len() == 36);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        assert_eq!(id, message_id("0123abcd.Rückruf für Kunden.mit Punkt"));
    }

    #[test]
    fn one_signature_per_key() {
        let header = signature_header(&[vec![1; 24], vec![2; 24]], "msg_x", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }
}
