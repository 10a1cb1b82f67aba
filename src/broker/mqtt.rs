//! An MQTT broker as the configuration names it, and the `rumqttc` options to reach it.
//!
//! [`MqttServer`] is what an `mqtt` action or source says of its broker (`url`
//! `mqtt://host:port` or `mqtts://host:port`, `username`/`password`, `tls`, `ca_file`),
//! checked at load, secrets kept as written. [`MqttServer::options`] makes the options
//! of one client: a persistent session (`clean_session: false`, so the broker keeps
//! what a subscriber has not acknowledged while it is away), MQTT 3.1.1, a keep-alive
//! of 10 s, TLS through rustls (the system's CA certificates, or `ca_file`), and
//! optionally a last will.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default broker.
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";
/// Keep-alive: a broker takes a silent client for gone after 1.5 times this (and then
/// publishes its last will).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Largest message taken or sent (an event is well under 2 KB).
const MAX_PACKET: usize = 256 * 1024;

/// A checked MQTT broker, as kept in a job or a source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MqttServer {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS), without credentials.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// As written (`${env:NAME}` resolved when connecting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// TLS (also when the URL says `mqtts://` or a `ca_file` is given).
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM) to verify the broker with, instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The configuration's folder: `${file:PATH}` secrets are relative to it.
    pub base: PathBuf,
}

/// The broker keys as written in an `mqtt` action or source.
#[derive(Debug, Clone, Default)]
pub struct ServerKeys<'a> {
    pub url: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub tls: bool,
    pub ca_file: Option<&'a Path>,
}

impl MqttServer {
    /// Checks the keys; relative paths are relative to `base`. A password must resolve
    /// now (it is resolved again at each connection).
    pub fn build(keys: &ServerKeys<'_>, base: &Path) -> Result<MqttServer, String> {
        let url = keys.url.unwrap_or(DEFAULT_URL);
        let parsed = super::server_url(
            url,
            &["mqtt", "mqtts", "tcp", "ssl"],
            "mqtt:// or mqtts://",
            "username and password",
        )?;
        if keys.password.is_some() && keys.username.is_none() {
            return Err("password: needs a username".into());
        }
        if let Some(password) = keys.password {
            super::resolve_secret(password, base).map_err(|e| format!("password: {e}"))?;
        }
        let ca_file = keys
            .ca_file
            .map(|p| super::config_path(p, base).map_err(|e| format!("ca_file: {e}")))
            .transpose()?;
        Ok(MqttServer {
            url: url.to_owned(),
            username: keys.username.map(str::to_owned),
            password: keys.password.map(str::to_owned),
            tls: keys.tls || matches!(parsed.scheme(), "mqtts" | "ssl") || ca_file.is_some(),
            ca_file,
            base: base.to_owned(),
        })
    }

    /// Host and port (1883, or 8883 with TLS, when the URL gives none).
    pub fn address(&self) -> (String, u16) {
        let parsed = url::Url::parse(&self.url).ok();
        let host = parsed
            .as_ref()
            .and_then(|u| u.host_str())
            .unwrap_or("127.0.0.1")
            .trim_matches(['[', ']'])
            .to_owned();
        let port = parsed
            .and_then(|u| u.port())
            .unwrap_or(if self.tls { 8883 } else { 1883 });
        (host, port)
    }

    /// Options of a client `client_id` with a persistent session; `will`: the topic and
    /// message the broker publishes (retained) when the client is gone without saying
    /// goodbye.
    pub fn options(&self, client_id: &str, will: Option<(&str, &str)>) -> Result<rumqttc::MqttOptions, String> {
        let (host, port) = self.address();
        let mut options = rumqttc::MqttOptions::new(client_id, host, port);
        options
            .set_clean_session(false)
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some(username) = &self.username {
            let password = match &self.password {
                Some(written) => super::resolve_secret(written, &self.base).map_err(|e| format!("password: {e}"))?,
                None => String::new(),
            };
            options.set_credentials(username.clone(), password);
        }
        if let Some((topic, message)) = will {
            options.set_last_will(rumqttc::LastWill::new(topic, message, rumqttc::QoS::AtLeastOnce, true));
        }
        if self.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
                Arc::new(self.tls_config()?),
            )));
        }
        Ok(options)
    }

    /// rustls with the ring provider, trusting `ca_file` or the system's certificates.
    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in
                    CertificateDer::pem_file_iter(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?
                {
                    let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_checked() {
        let base = Path::new("/etc/callhook");
        let plain = MqttServer::build(&ServerKeys::default(), base).unwrap();
        assert_eq!(plain.address(), ("127.0.0.1".to_owned(), 1883));
        let tls = MqttServer::build(
            &ServerKeys {
                url: Some("mqtts://broker.example.com"),
                ..Default::default()
            },
            base,
        )
        .unwrap();
        assert!(tls.tls);
        assert_eq!(tls.address().1, 8883);
        assert!(tls.options("c", Some(("callhook/d/status", "offline"))).is_ok());
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
                    password: Some("p"),
                    ..Default::default()
                },
                "username",
            ),
        ] {
            let error = MqttServer::build(&keys, base).unwrap_err();
            assert!(error.contains(needle), "{needle} in {error}");
        }
    }
}
