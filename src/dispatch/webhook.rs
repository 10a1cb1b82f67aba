//! Sending one webhook request and judging the answer: done, retry, or give up.
//!
//! Through `http_client`'s client: connect timeout 5 s, the request's own total timeout
//! (15 s by default) over sending and reading an error answer's start; redirects are
//! not followed (a 3xx is an answer, not a detour); names that resolve to link-local or
//! cloud-metadata addresses are refused, as are such literal addresses. Every request
//! carries `webhook-id` (made from the job's idempotency key, see `signing`) and
//! `webhook-timestamp`, and `webhook-signature` when the rule has secrets. A rule's
//! header replaces a default of the same name (`User-Agent`, `Accept`, `Content-Type`).
//!
//! Secrets are read when the request is sent: the job holds placeholders and where each
//! value comes from (`rules::secret_ref`); a secret that cannot be read fails the
//! attempt (retried as any failure), and every reason recorded or logged has the
//! values hidden, in every encoding. Trusted CAs: the bundled Mozilla roots, the
//! system's store (or `SSL_CERT_FILE`), and a webhook's own `ca_file`.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::Delivery;
pub use super::http_client::{Body, Client, client, client_with, forbidden};
use super::signing;
use crate::rules::action::{Preset, WebhookRequest};
use crate::rules::secret_ref::{LiteralKeys, Resolved};

/// Keep at most this much of an error response's body for the job's last error.
const ERROR_BODY: usize = 300;
/// Sent unless a rule sets its own: who calls, and that any answer will do.
const USER_AGENT: &str = concat!("callhook/", env!("CARGO_PKG_VERSION"));
const ACCEPT_ANY: &str = "*/*";

/// Sends `request` once, as job `key`, its secrets read now (literal signing keys from
/// `keys`); the reason of a failure has them hidden.
pub async fn send(client: &Client, request: &WebhookRequest, key: &str, keys: &LiteralKeys) -> Delivery {
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
    client: &Client,
    request: &WebhookRequest,
    key: &str,
    keys: &LiteralKeys,
    resolved: &mut Resolved,
) -> Delivery {
    let timeout_ms = request.timeout_ms.max(1);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let prepared = match prepare(client, request, key, keys, resolved) {
        Ok(prepared) => prepared,
        Err(delivery) => return delivery,
    };
    match tokio::time::timeout_at(deadline, client.request(prepared)).await {
        Ok(Ok(response)) => judge(response, request, deadline).await,
        Ok(Err(error)) => Delivery::Retry {
            reason: describe(&error),
            after: None,
        },
        Err(_) => Delivery::Retry {
            reason: format!("timed out: no answer within {timeout_ms} ms"),
            after: None,
        },
    }
}

/// The request to send, or why there is none: the URL checked ([`checked_uri`]; once
/// per client, unless it holds a secret), the secrets put in, signed.
fn prepare(
    client: &Client,
    request: &WebhookRequest,
    key: &str,
    keys: &LiteralKeys,
    resolved: &mut Resolved,
) -> Result<http::Request<Body>, Delivery> {
    let uri = if request.secret_refs.is_empty() {
        client.uri(&request.url, checked_uri)?
    } else {
        checked_uri(&resolved.expand(&request.url))?
    };
    let method = http::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| Delivery::GiveUp(format!("bad method {:?}", request.method)))?;
    let keys = signing_keys(request, keys, resolved).map_err(|reason| Delivery::Retry { reason, after: None })?;
    let body = resolved.expand(&request.body);
    let timestamp = jiff::Timestamp::now().as_second();
    let id = signing::message_id(key);
    let mut headers = http::HeaderMap::with_capacity(8 + request.headers.len());
    for (name, value) in &request.headers {
        // Names were checked when the rule was loaded; values get their secrets now.
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Delivery::GiveUp(format!("headers: {name:?} is not a valid header name")))?;
        let value = HeaderValue::try_from(resolved.expand(value)).map_err(|_| Delivery::Retry {
            reason: format!("headers.{name}: a secret put in is no valid header value (visible ASCII only)"),
            after: None,
        })?;
        headers.append(name, value);
    }
    let content_type = HeaderValue::from_str(&request.content_type)
        .map_err(|_| Delivery::GiveUp(format!("bad content type {:?}", request.content_type)))?;
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::USER_AGENT, HeaderValue::from_static(USER_AGENT)),
        (header::ACCEPT, HeaderValue::from_static(ACCEPT_ANY)),
    ] {
        headers.entry(name).or_insert(value);
    }
    let id_value =
        HeaderValue::try_from(id.as_str()).map_err(|_| Delivery::GiveUp(format!("bad webhook-id {id:?}")))?;
    headers.insert(HeaderName::from_static("webhook-id"), id_value);
    headers.insert(
        HeaderName::from_static("webhook-timestamp"),
        HeaderValue::from(timestamp),
    );
    if !keys.is_empty() {
        // Signed as sent: with the secrets in the body.
        let signature = signing::signature_header(&keys, &id, timestamp, body.as_bytes());
        let signature =
            HeaderValue::try_from(signature).map_err(|_| Delivery::GiveUp("bad webhook-signature".to_owned()))?;
        headers.insert(HeaderName::from_static("webhook-signature"), signature);
    }
    let mut prepared = http::Request::new(Body::new(body.into()));
    *prepared.method_mut() = method;
    *prepared.uri_mut() = uri;
    *prepared.headers_mut() = headers;
    Ok(prepared)
}

/// `url` as a request's URI: parsed once (its normalized form sent), a literal
/// forbidden address refused.
fn checked_uri(url: &str) -> Result<http::Uri, Delivery> {
    let url = url::Url::parse(url).map_err(|e| Delivery::GiveUp(format!("bad URL: {e}")))?;
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
        _ => None,
    };
    if let Some(ip) = ip.filter(|ip| forbidden(*ip)) {
        return Err(Delivery::GiveUp(format!(
            "{ip} is a link-local or metadata address, which is refused"
        )));
    }
    http::Uri::try_from(String::from(url)).map_err(|e| Delivery::GiveUp(format!("bad URL: {e}")))
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
async fn judge(response: http::Response<Incoming>, request: &WebhookRequest, deadline: Instant) -> Delivery {
    let status = response.status();
    if status.is_success() {
        return Delivery::Done(format!("{}", status.as_u16()));
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = first_bytes(response.into_body(), ERROR_BODY * 4, deadline).await;
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

/// At most `limit` bytes of an answer's body, read until `deadline`: an error page can
/// be huge (or endless, or slow), and only its start is kept for the job's last error.
/// The rest is not read; dropping the answer closes its connection.
async fn first_bytes(mut body: Incoming, limit: usize, deadline: Instant) -> Vec<u8> {
    let mut kept = Vec::new();
    while kept.len() < limit {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    kept.extend_from_slice(&chunk[..chunk.len().min(limit - kept.len())]);
                }
            }
            Ok(None | Some(Err(_))) | Err(_) => break,
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

/// Why a request got no answer: a timeout (the connect timeout, or one from the
/// system), no connection, or another failure, with every cause after it.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut causes = Vec::new();
    let mut timed_out = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        timed_out |= cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        causes.push(cause.to_string());
        source = cause.source();
    }
    let what = if timed_out {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{what}: {}", causes.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL checked once is given again as it was; one refused is refused every time
    /// (nothing kept of it).
    #[test]
    fn urls_are_checked_once_per_client() {
        let client = super::super::http_client::client();
        let mut checks = 0;
        for _ in 0..3 {
            let uri = client.uri("http://Example.com:80/a b", |url| {
                checks += 1;
                checked_uri(url)
            });
            assert_eq!(uri.unwrap().to_string(), "http://example.com/a%20b");
        }
        assert_eq!(checks, 1);
        for _ in 0..2 {
            match client.uri("http://169.254.169.254/", checked_uri) {
                Err(Delivery::GiveUp(reason)) => assert!(reason.contains("metadata"), "{reason}"),
                other => panic!("{other:?}"),
            }
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
