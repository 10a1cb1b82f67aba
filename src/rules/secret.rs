//! Standard Webhooks secrets (`whsec_` + base64 of the key), read as the reference
//! libraries read them, when rules load, so `check` reports what would fail at run
//! time. The Python library (standard-webhooks/standard-webhooks
//! `libraries/python/standardwebhooks/webhooks.py`, `Webhook.__init__`) strips the
//! prefix, decodes `secret + "=="` (padded and unpadded both work) and refuses an empty
//! key; the spec (`spec/standard-webhooks.md`, "Signing secret") asks for 24 to 64
//! bytes, which the libraries do not enforce: a warning here.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

/// Base64 that takes padded and unpadded input alike, as the reference libraries do.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The spec's key size range for symmetric signatures, in bytes.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// The key in a `whsec_...` secret; an error (for `check`) when it is not base64 or
/// is empty.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return Err("a Standard Webhooks secret starts with `whsec_`".into());
    };
    let key = LENIENT
        .decode(encoded.trim_end_matches('='))
        .map_err(|e| format!("the part after `whsec_` is not base64: {e}"))?;
    if key.is_empty() {
        return Err("the secret is empty after `whsec_` (the reference libraries refuse an empty key)".into());
    }
    Ok(key)
}

/// A warning for a key outside the spec's 24 to 64 bytes (`None` when within).
pub fn key_warning(key: &[u8]) -> Option<String> {
    (!KEY_BYTES.contains(&key.len())).then(|| {
        format!(
            "the secret's key is {} bytes; the Standard Webhooks spec asks for 24 to 64 (receivers' libraries still accept it)",
            key.len()
        )
    })
}
