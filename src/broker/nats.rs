//! A NATS server as the configuration names it, and a connection to it.
//!
//! [`NatsServer`] is what a `nats` action or source says of its server (`url`,
//! `creds_file` or `token` or `user`/`password`, `tls`, `ca_file`), checked at load and
//! kept with secrets as written (see the module above). [`NatsServer::connect`] makes
//! an `async-nats` client that connects in the background and reconnects for ever
//! (every 0.1 s more per attempt, at most every 2 s), so a broker down at start or
//! restarted later only delays what waits for it. [`ensure_stream`] makes the JetStream
//! stream when it is missing, or checks the one there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default server.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// The default stream, and the subjects it is made with.
pub const DEFAULT_STREAM: &str = "CALLHOOK";
/// How long JetStream remembers a `Nats-Msg-Id` to drop a repeat, by default.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A checked NATS server, as kept in a job or a source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NatsServer {
    /// `nats://host:port` or `tls://host:port`, without credentials.
    pub url: String,
    /// A `.creds` file (JWT and NKey seed), absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// A token, as written (`${env:NAME}` resolved when connecting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// As written, like `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Require TLS (also when the URL says `tls://` or a `ca_file` is given).
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM) to verify the server with, instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The configuration's folder: `${file:PATH}` secrets are relative to it.
    pub base: PathBuf,
}

/// The server keys as written in a `nats` action or source.
#[derive(Debug, Clone, Default)]
pub struct ServerKeys<'a> {
    pub url: Option<&'a str>,
    pub creds_file: Option<&'a Path>,
    pub token: Option<&'a str>,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub tls: bool,
    pub ca_file: Option<&'a Path>,
}

impl NatsServer {
    /// Checks the keys; relative paths are relative to `base`. Secrets must resolve now
    /// (they are resolved again at each connection).
    pub fn build(keys: &ServerKeys<'_>, base: &Path) -> Result<NatsServer, String> {
        let url = keys.url.unwrap_or(DEFAULT_URL);
        let parsed = super::server_url(url, &["nats", "tls"], "nats:// or tls://", "user/password or token")?;
        let ways = [keys.creds_file.is_some(), keys.token.is_some(), keys.user.is_some()];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err("give one of creds_file, token, or user and password".into());
        }
        if keys.user.is_some() != keys.password.is_some() {
            return Err("user and password go together".into());
        }
        for (key, secret) in [("token", keys.token), ("password", keys.password)] {
            if let Some(secret) = secret {
                super::resolve_secret(secret, base).map_err(|e| format!("{key}: {e}"))?;
            }
        }
        let path = |key: &str, p: Option<&Path>| -> Result<Option<PathBuf>, String> {
            p.map(|p| super::config_path(p, base).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        Ok(NatsServer {
            url: url.to_owned(),
            creds_file: path("creds_file", keys.creds_file)?,
            token: keys.token.map(str::to_owned),
            user: keys.user.map(str::to_owned),
            password: keys.password.map(str::to_owned),
            tls: keys.tls || parsed.scheme() == "tls" || keys.ca_file.is_some(),
            ca_file: path("ca_file", keys.ca_file)?,
            base: base.to_owned(),
        })
    }

    /// A client for this server named `name` (shown by the server's monitoring). It
    /// connects in the background: a server that is down now is reached when it comes.
    /// Fails only on a credentials file or secret that cannot be read.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, String> {
        let url = self.url.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(CONNECT_TIMEOUT)
            .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(2_000)))
            .event_callback(move |event| {
                let url = url.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!(%url, "connected to NATS"),
                        async_nats::Event::Disconnected => tracing::warn!(%url, "disconnected from NATS; reconnecting"),
                        other => tracing::debug!(%url, "NATS: {other}"),
                    }
                }
            });
        if let Some(creds) = &self.creds_file {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| format!("creds_file {}: {e}", creds.display()))?;
        }
        if let Some(token) = &self.token {
            options = options.token(super::resolve_secret(token, &self.base).map_err(|e| format!("token: {e}"))?);
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            let password = super::resolve_secret(password, &self.base).map_err(|e| format!("password: {e}"))?;
            options = options.user_and_password(user.clone(), password);
        }
        if self.tls {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        options
            .connect(self.url.as_str())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))
    }
}

/// The JetStream stream a `nats` action publishes into.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamSpec {
    pub name: String,
    /// The subjects it is made with when missing (`callhook.>`).
    pub subjects: Vec<String>,
    /// How long a `Nats-Msg-Id` is remembered to drop a repeat, in ms.
    pub duplicate_window_ms: u64,
}

/// Checks a stream name: letters, digits, `-` and `_` (JetStream refuses `.`, `*`, `>`,
/// spaces).
pub fn stream_name(written: &str) -> Result<String, String> {
    if !written.is_empty()
        && written
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(written.to_owned())
    } else {
        Err(format!("{written:?} is not a stream name (letters, digits, `-`, `_`)"))
    }
}

/// Makes the stream when it is missing (limits retention, file storage, the duplicate
/// window), or checks the one there: it must take `subject`, and a duplicate window of
/// zero is reported (repeats would then reach the consumers, whose store drops them).
pub async fn ensure_stream(
    jetstream: &async_nats::jetstream::Context,
    spec: &StreamSpec,
    subject: &str,
) -> Result<(), String> {
    use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
    let config = Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        duplicate_window: Duration::from_millis(spec.duplicate_window_ms),
        ..Default::default()
    };
    let mut stream = jetstream
        .get_or_create_stream(config)
        .await
        .map_err(|e| format!("stream {}: cannot make or find it: {e}", spec.name))?;
    let info = stream.info().await.map_err(|e| format!("stream {}: {e}", spec.name))?;
    if !info
        .config
        .subjects
        .iter()
        .any(|f| super::subject::nats_matches(f, subject))
    {
        return Err(format!(
            "stream {} exists but does not take subject {subject} (its subjects: {}); add it, or set `stream:` to the right one",
            spec.name,
            info.config.subjects.join(", ")
        ));
    }
    if info.config.duplicate_window.is_zero() {
        tracing::warn!(stream = %spec.name, "the stream has no duplicate window: a repeated publish is stored twice (the central store still drops it by event id)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_checked() {
        let base = Path::new("/etc/callhook");
        let server = NatsServer::build(&ServerKeys::default(), base).unwrap();
        assert_eq!(server.url, DEFAULT_URL);
        assert!(!server.tls);
        let tls = NatsServer::build(
            &ServerKeys {
                url: Some("tls://nats.example.com:4222"),
                ca_file: Some(Path::new("ca.pem")),
                ..Default::default()
            },
            base,
        )
        .unwrap();
        assert!(tls.tls);
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/callhook/ca.pem")));
        for (keys, needle) in [
            (
                ServerKeys {
                    url: Some("http://x"),
                    ..Default::default()
                },
                "scheme",
            ),
            (
                ServerKeys {
                    url: Some("nats://u:p@x:4222"),
                    ..Default::default()
                },
                "credentials",
            ),
            (
                ServerKeys {
                    token: Some("t"),
                    user: Some("u"),
                    password: Some("p"),
                    ..Default::default()
                },
                "one of",
            ),
            (
                ServerKeys {
                    token: Some("${env:CALLHOOK_UNSET_NATS_TOKEN}"),
                    ..Default::default()
                },
                "CALLHOOK_UNSET_NATS_TOKEN",
            ),
        ] {
            let error = NatsServer::build(&keys, base).unwrap_err();
            assert!(error.contains(needle), "{needle} in {error}");
        }
    }
}
