//! The fleet's message brokers: what a desk's `nats` / `mqtt` action and a central
//! `nats` / `mqtt` source share.
//!
//! A call centre runs one callhook per desk (the edge) and one central callhook. Each
//! desk's rules publish its events to NATS JetStream or an MQTT broker (through the
//! durable outbox, like a webhook); the central one consumes them as a source and runs
//! the rules once for all desks. This module holds what both ends need and no stage's
//! logic:
//!
//! - [`nats`]: a NATS server as configured (`url`, credentials, TLS) → a connected
//!   `async-nats` client, and the JetStream stream made or checked.
//! - [`mqtt`]: an MQTT broker as configured → `rumqttc` options (persistent session,
//!   TLS, credentials, the desk's last will).
//! - [`subject`]: subject and topic templates (`callhook.{desk}.{type}`), whose values
//!   (caller ID among them) are reduced to safe tokens before they enter a subject.
//! - [`desk_name`]: the desk's name (`desk:`, else this machine's host name).
//!
//! Secrets (`token`, `password`) are kept as written (`${env:NAME}`, `${file:PATH}`)
//! and resolved when a connection is made ([`resolve_secret`]), so the state database
//! holds references, never the values.

pub mod mqtt;
pub mod nats;
pub mod subject;

use std::path::{Path, PathBuf};

/// The longest desk name, in characters.
pub const MAX_DESK_CHARS: usize = 64;

/// This machine's desk name when the configuration gives none: its host name, made a
/// subject-safe token (see [`subject::token`]), e.g. `desk-12.example.com` →
/// `desk-12_example_com`.
pub fn default_desk() -> String {
    let host = gethostname::gethostname();
    subject::token(&host.to_string_lossy(), MAX_DESK_CHARS)
}

/// Checks a configured `desk:` name: 1 to 64 of `A-Z a-z 0-9 _ -`, so it is one token of
/// a NATS subject and one level of an MQTT topic as written.
pub fn desk_name(written: &str) -> Result<String, String> {
    let ok = !written.is_empty()
        && written.chars().count() <= MAX_DESK_CHARS
        && written
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(written.to_owned())
    } else {
        Err(format!(
            "{written:?} is not a desk name: 1 to {MAX_DESK_CHARS} letters, digits, `_` or `-` (it becomes one token of a subject or topic)"
        ))
    }
}

/// A secret as written, `${env:NAME}`, `${file:PATH}` (relative to `base`, the
/// configuration's folder) or literal text, resolved now. Errors name the variable or
/// file, never the value.
pub fn resolve_secret(written: &str, base: &Path) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = written;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unclosed `${`".to_owned())?;
        let reference = &after[..end];
        let value = match reference.split_once(':') {
            Some(("env", name)) => std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("environment variable {name} is not set (needed for `${{env:{name}}}`)"))?,
            Some(("file", path)) => {
                let path = base.join(path);
                std::fs::read_to_string(&path)
                    .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?
            }
            _ => {
                return Err(format!(
                    "`${{{reference}}}`: expected `${{env:NAME}}` or `${{file:PATH}}`"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A broker's URL, checked: one of `schemes` (`expected` names them for the user), a
/// host, and no credentials in it (they go in `credentials`, where secrets resolve).
pub fn server_url(url: &str, schemes: &[&str], expected: &str, credentials: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("url: {url:?}: {e}"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!("url: {url:?}: scheme is not {expected}"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("url: {url:?} names no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("url: give credentials as {credentials}, not in the URL"));
    }
    Ok(parsed)
}

/// A configured file path (`creds_file`, `ca_file`): `%NAME%`, `${env:NAME}` and `~`
/// expanded, relative to `base`.
pub fn config_path(written: &Path, base: &Path) -> Result<PathBuf, String> {
    crate::expand::path(written)
        .map(|p| base.join(p))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desk_names() {
        assert_eq!(desk_name("desk-12_a").unwrap(), "desk-12_a");
        for bad in ["", "a.b", "a b", "a*", "a>", "ä", &"x".repeat(65)] {
            assert!(desk_name(bad).is_err(), "{bad:?}");
        }
        let default = default_desk();
        assert!(desk_name(&default).is_ok(), "{default:?}");
    }

    #[test]
    fn secrets_resolve_from_env_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        assert_eq!(resolve_secret("plain", dir.path()).unwrap(), "plain");
        assert_eq!(resolve_secret("${file:pw}", dir.path()).unwrap(), "from-file");
        let error = resolve_secret("${env:CALLHOOK_UNSET_SECRET_X}", dir.path()).unwrap_err();
        assert!(error.contains("CALLHOOK_UNSET_SECRET_X"), "{error}");
        assert!(resolve_secret("${vault:x}", dir.path()).is_err());
    }
}
