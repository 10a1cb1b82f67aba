//! Sending one webhook request and judging the answer: done, retry, or give up.
//!
//! reqwest with rustls; connect timeout 5 s, the request's own total timeout (15 s by
//! default); redirects are not followed (a 3xx is an answer, not a detour); names that
//! resolve to link-local or cloud-metadata addresses are refused, as are such literal
//! addresses. Every request carries `webhook-id` (made from the job's idempotency key,
//! see `signing`) and `webhook-timestamp`, and `webhook-signature` when the rule has
//! secrets. A rule's header replaces a default of the same name.
//!
//! Secrets are read when the request is sent: the job holds placeholders and where each
//! value comes from (`rules::secret_ref`); a secret that cannot be read fails the
//! attempt (retried as any failure), and every reason recorded or logged has the
//! values hidden, in every encoding. Trusted CAs: the bundled Mozilla roots, the
//! system's store (or `SSL_CERT_FILE`), and a webhook's own `ca_file`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderName;

use super::Delivery;
use super::signing;
use crate::rules::action::{Preset, WebhookRequest};
use crate::rules::secret_ref::{LiteralKeys, Resolved};

/// Connect timeout for every webhook.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep at most this much of an error response's body for the job's last error.
const ERROR_BODY: usize = 300;

/// The HTTP client the webhooks without a `ca_file` share (connection reuse).
pub fn client() -> reqwest::Client {
    client_with(None).expect("a client with these settings builds")
}

/// A client trusting the bundled roots, the system's store (`SSL_CERT_FILE` when set)
/// and, when given, the CA certificates of a PEM file; an error names the file.
pub fn client_with(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .dns_resolver(Arc::new(GuardedResolver))
        .user_agent(concat!("callhook/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(64);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file: cannot read {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file: {} is not PEM certificates: {e}", path.display()))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
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

/// The system resolver, with forbidden addresses taken out of every answer.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| !forbidden(a.ip())).collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(
                    format!("{host} resolves only to link-local or metadata addresses, which are refused").into(),
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Sends `request` once, as job `key`, its secrets read now (literal signing keys from
/// `keys`); the reason of a failure has them hidden.
pub async fn send(client: &reqwest::Client, request: &WebhookRequest, key: &str, keys: &LiteralKeys) -> Delivery {
    let mut resolved = match request.secret_refs.resolve(keys) {
        Ok(resolved) => resolved,
        Err(e) => {
            return Delivery::Retry {
                reason: format!("secret: {e}"),
                after: None,
            };
        }
    };
    let delivery = send_resolved(client, request, key, keys, &mut resolved).await;
    match delivery {
        Delivery::Done(what) => Delivery::Done(resolved.redact(&what)),
        Delivery::Retry { reason, after } => Delivery::Retry {
            reason: resolved.redact(&reason),
            after,
        },
        Delivery::GiveUp(reason) => Delivery::GiveUp(resolved.redact(&reason)),
        Delivery::Disable(reason) => Delivery::Disable(resolved.redact(&reason)),
    }
}

/// The signing keys of `request`, read now (and remembered in `resolved` to hide).
fn signing_keys(request: &WebhookRequest, keys: &LiteralKeys, resolved: &mut Resolved) -> Result<Vec<Vec<u8>>, String> {
    let mut found = Vec::with_capacity(request.signing.len() + request.secrets.len());
    for source in &request.signing {
        let secret = source.read(keys).map_err(|e| format!("webhook secret: {e}"))?;
        resolved.remember(secret.clone());
        found.push(signing::decode_secret(&secret).map_err(|e| format!("webhook secret {source}: {e}"))?);
    }
    for secret in &request.secrets {
        resolved.remember(secret.clone());
        found.push(signing::decode_secret(secret).map_err(|e| format!("webhook secret: {e}"))?);
    }
    Ok(found)
}

async fn send_resolved(
    client: &reqwest::Client,
    request: &WebhookRequest,
    key: &str,
    keys: &LiteralKeys,
    resolved: &mut Resolved,
) -> Delivery {
    let url = match reqwest::Url::parse(&resolved.expand(&request.url)) {
        Ok(url) => url,
        Err(e) => return Delivery::GiveUp(format!("bad URL: {e}")),
    };
    if let Some(host) = url.host_str()
        && let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>()
        && forbidden(ip)
    {
        return Delivery::GiveUp(format!("{ip} is a link-local or metadata address, which is refused"));
    }
    let method = match reqwest::Method::from_bytes(request.method.as_bytes()) {
        Ok(method) => method,
        Err(_) => return Delivery::GiveUp(format!("bad method {:?}", request.method)),
    };
    let keys = match signing_keys(request, keys, resolved) {
        Ok(keys) => keys,
        Err(reason) => return Delivery::Retry { reason, after: None },
    };
    let body = resolved.expand(&request.body);
    let timestamp = jiff::Timestamp::now().as_second();
    let id = signing::message_id(key);
    let mut builder = client
        .request(method, url)
        .timeout(Duration::from_millis(request.timeout_ms.max(1)));
    // A rule's own header of the same name replaces the default (one Content-Type).
    if !request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        builder = builder.header(reqwest::header::CONTENT_TYPE, &request.content_type);
    }
    // Names made from static text: no parsing or copy per request.
    builder = builder
        .header(HeaderName::from_static("webhook-id"), &id)
        .header(HeaderName::from_static("webhook-timestamp"), timestamp.to_string());
    if !keys.is_empty() {
        // Signed as sent: with the secrets in the body.
        let signature = signing::signature_header(&keys, &id, timestamp, body.as_bytes());
        builder = builder.header(HeaderName::from_static("webhook-signature"), signature);
    }
    for (name, value) in &request.headers {
        let value = match reqwest::header::HeaderValue::from_str(&resolved.expand(value)) {
            Ok(value) => value,
            Err(_) => {
                return Delivery::Retry {
                    reason: format!("headers.{name}: a secret put in is no valid header value (visible ASCII only)"),
                    after: None,
                };
            }
        };
        builder = builder.header(name.as_str(), value);
    }
    let response = match builder.body(body).send().await {
        Ok(response) => response,
        Err(error) => {
            return Delivery::Retry {
                reason: describe(&error),
                after: None,
            };
        }
    };
    judge(response, request).await
}

/// Whether an error answer means the receiver has what was sent already: Zammad
/// answers a `newCall` for a `callId` it knows with HTTP 500 "call_id … already
/// exists!" (`app/models/cti/log.rb`, `Cti::Log.process`), as when a delivery timed
/// out after Zammad stored it and is made again.
fn already_delivered(request: &WebhookRequest, status: u16, body: &str) -> bool {
    request.preset == Some(Preset::ZammadCti)
        && status == 500
        && body.contains("already exists")
        && request.body.starts_with("event=newCall&")
}

/// Turns an answer into done, retry (with the server's `Retry-After` when it gave
/// one) or give up.
async fn judge(response: reqwest::Response, request: &WebhookRequest) -> Delivery {
    let status = response.status();
    if status.is_success() {
        return Delivery::Done(format!("{}", status.as_u16()));
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = first_bytes(response, ERROR_BODY * 4).await;
    let body = String::from_utf8_lossy(&body);
    if already_delivered(request, status.as_u16(), &body) {
        return Delivery::Done(format!("{} (already there)", status.as_u16()));
    }
    let snippet: String = body.chars().take(ERROR_BODY).collect();
    let reason = format!(
        "HTTP {}{}",
        status.as_u16(),
        if snippet.is_empty() {
            String::new()
        } else {
            format!(": {snippet}")
        }
    );
    match status.as_u16() {
        300..=399 => Delivery::GiveUp(format!("{reason} (redirects are not followed)")),
        408 | 429 => Delivery::Retry {
            reason,
            after: retry_after,
        },
        410 => Delivery::Disable(reason),
        400..=499 => Delivery::GiveUp(reason),
        _ => Delivery::Retry {
            reason,
            after: retry_after,
        },
    }
}

/// At most `limit` bytes of an answer's body: an error page can be huge (or endless),
/// and only its start is kept for the job's last error. The rest is not read; dropping
/// the answer closes its connection.
async fn first_bytes(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    while kept.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(limit - kept.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    kept
}

/// The longest `Retry-After` taken: a receiver asking for more is asked again then.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After`: seconds, or an HTTP date; at most [`MAX_RETRY_AFTER`].
fn parse_retry_after(value: &str) -> Option<Duration> {
    let wait = match value.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds.min(MAX_RETRY_AFTER.as_secs())),
        Err(_) => {
            let when = jiff::fmt::rfc2822::parse(value.trim()).ok()?.timestamp();
            Duration::try_from(when.duration_since(jiff::Timestamp::now())).ok()?
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None); // in the past
        assert_eq!(parse_retry_after("soon"), None);
        // Huge values wait an hour at most, and never overflow.
        assert_eq!(parse_retry_after("99999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("9223372036854775"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("18446744073709551615"), Some(MAX_RETRY_AFTER));
    }
}
