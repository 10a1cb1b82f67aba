//! What the record-style sources (call-log CSV, MicroSIP call history) share: a stable
//! synthetic Call-ID for calls known only by number and start time, and the SIP status
//! that a status text such as `486 Busy Here` or `Request Terminated` stands for.

use sha2::{Digest, Sha256};

/// A stable call id for a call that has no SIP Call-ID: the same number and start time
/// (Unix seconds) give the same id on every run and in every source, so the call-log
/// CSV export and the history entry of one call agree. The number is hashed, not
/// copied, so the id has one shape (`syn-` and 24 hex digits) whatever the caller sent.
pub(crate) fn synthetic_call_id(number: &str, start_unix_seconds: i64) -> String {
    let mut hash = Sha256::new();
    hash.update((number.len() as u64).to_le_bytes());
    hash.update(number.as_bytes());
    hash.update(start_unix_seconds.to_le_bytes());
    let digest = hash.finalize();
    format!("syn-{}", hex::encode(&digest[..12]))
}

/// Reason phrases a softphone writes instead of a status code, lowercase.
const REASONS: &[(&str, u16)] = &[
    ("ok", 200),
    ("normal call clearing", 200),
    ("forbidden", 403),
    ("not found", 404),
    ("request timeout", 408),
    ("temporarily unavailable", 480),
    ("address incomplete", 484),
    ("busy here", 486),
    ("request terminated", 487),
    ("not acceptable here", 488),
    ("server internal error", 500),
    ("service unavailable", 503),
    ("busy everywhere", 600),
    ("decline", 603),
    ("declined", 603),
];

/// The SIP status a status text stands for: a leading three-digit code (`486 Busy
/// Here`, `603`), else a known English reason phrase in any letter case (`Busy Here`,
/// `Request Terminated`, `Declined`). `None` for anything else (empty, translated,
/// free text).
pub(crate) fn status_from_text(text: &str) -> Option<u16> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() >= 3 && bytes[..3].iter().all(u8::is_ascii_digit) {
        let boundary = bytes.get(3).is_none_or(|b| !b.is_ascii_alphanumeric());
        let code = u16::from(bytes[0] - b'0') * 100 + u16::from(bytes[1] - b'0') * 10 + u16::from(bytes[2] - b'0');
        if boundary && (100..700).contains(&code) {
            return Some(code);
        }
        return None;
    }
    let lower = text.trim_end_matches(['.', '!']).to_ascii_lowercase();
    REASONS
        .iter()
        .find(|(phrase, _)| *phrase == lower)
        .map(|&(_, code)| code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_ids_are_stable_and_distinct() {
        let a = synthetic_call_id("5551001", 1_795_422_838);
        assert_eq!(a, synthetic_call_id("5551001", 1_795_422_838));
        assert_ne!(a, synthetic_call_id("5551001", 1_795_422_839));
        assert_ne!(a, synthetic_call_id("55510011", 1_795_422_838));
        assert!(a.starts_with("syn-") && a.len() == 28, "{a}");
    }

    #[test]
    fn status_texts() {
        assert_eq!(status_from_text("486 Busy Here"), Some(486));
        assert_eq!(status_from_text(" 603"), Some(603));
        assert_eq!(status_from_text("200 Normal call clearing"), Some(200));
        assert_eq!(status_from_text("Busy Here"), Some(486));
        assert_eq!(status_from_text("busy everywhere"), Some(600));
        assert_eq!(status_from_text("Declined"), Some(603));
        assert_eq!(status_from_text("Request Terminated"), Some(487));
        assert_eq!(status_from_text("Request Timeout"), Some(408));
        assert_eq!(status_from_text("Temporarily Unavailable"), Some(480));
        assert_eq!(status_from_text(""), None);
        assert_eq!(status_from_text("Besetzt"), None);
        assert_eq!(status_from_text("1234 x"), None);
        assert_eq!(status_from_text("999 x"), None);
        assert_eq!(status_from_text("12"), None);
    }
}
