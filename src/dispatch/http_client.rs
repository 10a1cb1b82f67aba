//! The webhooks' HTTP client: hyper's pooled client over rustls, built once per trust
//! set (the outbox keeps one per `ca_file`) and shared by every delivery through it.
//!
//! hyper directly, not a higher-level client: at thousands of webhooks a second the
//! request path itself was a quarter of the outbox's CPU (reqwest parsed each URL three
//! times a request and copied its default headers into each), and `webhook` builds the
//! request whole anyway. What such a client would add is set here once: trusted CAs
//! (the bundled Mozilla roots, the system's store or `SSL_CERT_FILE`, a webhook's own
//! `ca_file`), ALPN offering h2 and http/1.1, a 5 s connect timeout, TCP keep-alive,
//! up to 64 idle kept-alive connections per endpoint, no redirects (hyper follows
//! none), and names that resolve to link-local or cloud-metadata addresses refused.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use foldhash::HashMap;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::rules::ca_file;

/// Connect timeout for every webhook.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle kept-alive connections per endpoint: an endpoint's `concurrency` is rarely more.
const IDLE_PER_ENDPOINT: usize = 64;
/// An idle connection is closed after this long (receivers often close at 60–120 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes after this long idle, as often, at most this many unanswered:
/// a receiver gone without a word is noticed on a kept connection within a minute.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_PROBES: u32 = 3;

/// What a request carries: the body, made whole before sending (its length is known).
pub type Body = Full<Bytes>;

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// An HTTP client (cheap to clone: one pointer); requests to one endpoint share its
/// kept-alive connections.
#[derive(Clone)]
pub struct Client(Arc<Shared>);

struct Shared {
    hyper: hyper_util::client::legacy::Client<Connector, Body>,
    /// URLs parsed and checked before (see [`Client::uri`]).
    uris: Mutex<HashMap<String, http::Uri>>,
}

/// A client keeps at most this many checked URLs (a rule's URL is one; a templated one
/// may be one per event): past that, it starts over.
const URIS_KEPT: usize = 256;

impl Client {
    /// Sends `request` (an absolute URI) and returns the answer's head, its body still
    /// to be read. No timeout but the connect timeout: callers set their own.
    pub fn request(&self, request: http::Request<Body>) -> hyper_util::client::legacy::ResponseFuture {
        self.0.hyper.request(request)
    }

    /// `url` as a request's URI, made by `check` the first time and kept: parsing and
    /// checking a URL (normalized, its host through IDNA) at every delivery cost half
    /// of making a request, and a rule's URL is the same for every job. Only URLs that
    /// hold no secret should come here (they are kept in memory).
    pub fn uri<E>(&self, url: &str, check: impl FnOnce(&str) -> Result<http::Uri, E>) -> Result<http::Uri, E> {
        if let Some(uri) = self.kept_uris().get(url) {
            return Ok(uri.clone());
        }
        let uri = check(url)?;
        let mut kept = self.kept_uris();
        if kept.len() >= URIS_KEPT {
            kept.clear();
        }
        kept.insert(url.to_owned(), uri.clone());
        Ok(uri)
    }

    fn kept_uris(&self) -> std::sync::MutexGuard<'_, HashMap<String, http::Uri>> {
        // A map of parsed URLs stays whole if a holder panicked.
        self.0.uris.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The HTTP client the webhooks without a `ca_file` share (connection reuse).
pub fn client() -> Client {
    client_with(None).expect("a client with these settings builds")
}

/// A client trusting the bundled roots, the system's store (`SSL_CERT_FILE` when set)
/// and, when given, the CA certificates of a PEM file; an error names the file.
pub fn client_with(ca_file: Option<&Path>) -> Result<Client, String> {
    let tls = tls_config(ca_file)?;
    let mut http = HttpConnector::new_with_resolver(GuardedResolver);
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_keepalive_interval(Some(TCP_KEEPALIVE));
    http.set_keepalive_retries(Some(TCP_KEEPALIVE_PROBES));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(IDLE_PER_ENDPOINT)
        .build(connector);
    Ok(Client(Arc::new(Shared {
        hyper: client,
        uris: Mutex::default(),
    })))
}

/// rustls with ring, TLS 1.2 and 1.3, trusting the bundled Mozilla roots, the system's
/// (unreadable ones skipped, as the store often holds a few) and `ca_file`'s. ALPN is
/// left empty: the connector offers h2 and http/1.1.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let (valid, invalid) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if valid == 0 && invalid > 0 {
        tracing::debug!(invalid, "no certificate of the system's store could be read");
    }
    if let Some(path) = ca_file {
        for certificate in ca_file::read(path)? {
            roots
                .add(certificate)
                .map_err(|e| format!("ca_file: {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Whether an address must never be called: link-local (cloud metadata services live
/// there, 169.254.169.254) and the IPv6 metadata address, also when an IPv4 address is
/// written in one of IPv6's forms (mapped `::ffff:a.b.c.d`, the deprecated compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`), which many stacks still route to it.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.octets() == [100, 100, 100, 200],
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |high: [u16; 6]| {
                (s[..6] == high)
                    .then(|| std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
            };
            let v4 = v6
                .to_ipv4_mapped()
                .or_else(|| embedded([0; 6]))
                .or_else(|| embedded([0x64, 0xff9b, 0, 0, 0, 0]));
            (s[0] & 0xffc0) == 0xfe80
                || s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254]
                || v4.is_some_and(|v4| forbidden(IpAddr::V4(v4)))
        }
    }
}

/// `host`'s addresses `found` without the forbidden ones; an error when nothing else
/// is left (an empty answer stays empty, for the connector to report).
fn allowed(host: &str, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
    let any = !found.is_empty();
    let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| !forbidden(a.ip())).collect();
    if allowed.is_empty() && any {
        return Err(format!(
            "{host} resolves only to link-local or metadata addresses, which are refused"
        ));
    }
    Ok(allowed)
}

/// The system resolver, with forbidden addresses taken out of every answer. Literal
/// addresses do not come here (the connector uses them as they are): `webhook` checks
/// those before sending.
#[derive(Clone, Copy)]
struct GuardedResolver;

type Resolving = Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, ResolveError>> + Send>>;
type ResolveError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            Ok(allowed(host, found)?.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "100.100.100.200",
        ] {
            assert!(forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["127.0.0.1", "10.0.0.1", "192.168.1.1", "::1", "8.8.8.8"] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn resolved_forbidden_addresses_are_taken_out() {
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 0);
        let mixed = vec![at("169.254.169.254"), at("10.0.0.1"), at("fe80::1")];
        assert_eq!(allowed("h", mixed), Ok(vec![at("10.0.0.1")]));
        assert_eq!(
            allowed("metadata.internal", vec![at("169.254.169.254")]),
            Err("metadata.internal resolves only to link-local or metadata addresses, which are refused".into())
        );
        assert_eq!(allowed("h", Vec::new()), Ok(Vec::new()));
    }

    /// The resolver the connector uses refuses a name that resolves only to a
    /// forbidden address (`localhost` is no such name, so its answer passes).
    #[test]
    fn the_resolver_answers_through_the_guard() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut resolver = GuardedResolver;
        let name: Name = "localhost".parse().unwrap();
        let found: Vec<SocketAddr> = runtime
            .block_on(tower_service::Service::call(&mut resolver, name))
            .unwrap()
            .collect();
        assert!(found.iter().all(|a| a.ip().is_loopback()), "{found:?}");
    }
}
