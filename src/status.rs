//! The local status page and metrics (`status: { listen: 127.0.0.1:PORT }`, off by
//! default): what callhook is doing, at a glance.
//!
//! A small HTTP server (axum) on the configured address serves:
//!
//! - `/`: a server-rendered page (no build step, a few KB of CSS, updated every second
//!   by fetching `/?partial=1`): each source with its file, read offset and how far it
//!   is behind the file's end; the last calls with their events and each delivery
//!   (rule, status, attempts, latency); dead jobs with a retry button; endpoints a 410
//!   Gone disabled, with an enable button. Buttons are POST forms carrying a CSRF token
//!   made at start, so another site cannot press them for the user.
//! - `/metrics`: what [`Metrics`] counted (lines, bytes, parse errors per source;
//!   events, rule firings, deliveries; latencies; events held), with the outbox and
//!   how far sources are behind read from the state database, in the OpenMetrics text
//!   format (`prometheus-client`).
//! - `/healthz`: `ok` (200) while every source is followed and the outbox is not
//!   stuck; else 503 with one line per problem ([`problems`]).
//!
//! Every value from a call (caller ID is hostile) goes through the template engine's
//! HTML escaping. The page listens on loopback only, unless a `token` is configured;
//! with one, every request needs it (`?token=` or `Authorization: Bearer`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, context};
use serde::Deserialize;

use crate::event::Event;
use crate::metrics::Metrics;
use crate::source::config::Source;
use crate::store::Store;

pub mod report;

/// Calls shown on the page.
const EVENTS_SHOWN: usize = 60;

/// `status:` as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    pub listen: SocketAddr,
    /// Needed on every request when set (then any address may be listened on).
    pub token: Option<String>,
}

struct Page {
    store: Mutex<Store>,
    sources: Vec<Source>,
    csrf: String,
    token: Option<String>,
    templates: Environment<'static>,
    metrics: Metrics,
}

/// Binds `config.listen` and serves until the runtime stops; returns the bound address.
pub async fn start(
    config: &StatusConfig,
    store: Store,
    sources: Vec<Source>,
    metrics: Metrics,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    let mut templates = Environment::new();
    templates
        .add_template("page.html", include_str!("status/page.html"))
        .and_then(|()| templates.add_template("live.html", include_str!("status/live.html")))
        .map_err(std::io::Error::other)?;
    let page = Arc::new(Page {
        store: Mutex::new(store),
        sources,
        csrf: crate::source::hook_inbox::random_hex::<16>()?,
        token: config.token.clone(),
        templates,
        metrics,
    });
    let app = Router::new()
        .route("/", get(show))
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(healthz))
        .route("/retry", post(retry))
        .route("/enable", post(enable))
        .with_state(page);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tracing::info!(%address, "status page at http://{address}/");
    Ok(address)
}

#[derive(Debug, Deserialize)]
struct Params {
    token: Option<String>,
    partial: Option<String>,
}

impl Page {
    fn allowed(&self, params: &Params, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        [params.token.as_deref(), bearer]
            .into_iter()
            .flatten()
            .any(|given| crate::source::hook_inbox::same_token(given, token))
    }

    /// `path` with the token, when one is needed.
    fn url(&self, path: &str) -> String {
        match &self.token {
            Some(token) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!(
                    "{path}{sep}token={}",
                    percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
                )
            }
            None => path.to_owned(),
        }
    }

    fn render(&self, partial: bool) -> Result<String, String> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let values = context! {
            problems => problems(&store, &self.metrics).map_err(|e| e.to_string())?,
            sources => sources(&store, &self.sources)?,
            events => recent_calls(&store)?,
            dead => store.jobs(Some("dead"), 100).map_err(|e| e.to_string())?.into_iter().map(|j| context! {
                id => j.id, rule => j.rule, call_id => j.call_id, error => j.last_error,
            }).collect::<Vec<_>>(),
            disabled => store.disabled_endpoints().map_err(|e| e.to_string())?.into_iter().map(|d| context! {
                endpoint => d.endpoint, since => d.since, reason => d.reason,
            }).collect::<Vec<_>>(),
            csrf => &self.csrf,
            retry_url => self.url("/retry"),
            enable_url => self.url("/enable"),
            partial_url => self.url("/?partial=1"),
        };
        let name = if partial { "live.html" } else { "page.html" };
        self.templates
            .get_template(name)
            .and_then(|t| t.render(values))
            .map_err(|e| e.to_string())
    }
}

async fn show(State(page): State<Arc<Page>>, Query(params): Query<Params>, headers: HeaderMap) -> Response {
    if !page.allowed(&params, &headers) {
        return (StatusCode::UNAUTHORIZED, "token needed\n").into_response();
    }
    match page.render(params.partial.is_some()) {
        Ok(html) => Html(html).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct Action {
    csrf: String,
    id: Option<i64>,
    endpoint: Option<String>,
}

async fn retry(
    State(page): State<Arc<Page>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    Form(action): Form<Action>,
) -> Response {
    act(&page, &params, &headers, &action, |store| match action.id {
        Some(id) => store.retry_jobs(Some(&[id])).map(|_| ()).map_err(|e| e.to_string()),
        None => Err("no job id".to_owned()),
    })
}

async fn enable(
    State(page): State<Arc<Page>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    Form(action): Form<Action>,
) -> Response {
    act(&page, &params, &headers, &action, |store| match &action.endpoint {
        Some(endpoint) => store.enable_endpoint(endpoint).map(|_| ()).map_err(|e| e.to_string()),
        None => Err("no endpoint".to_owned()),
    })
}

/// A button pressed: checked (token, CSRF), done, back to the page.
fn act(
    page: &Page,
    params: &Params,
    headers: &HeaderMap,
    action: &Action,
    work: impl FnOnce(&mut Store) -> Result<(), String>,
) -> Response {
    if !page.allowed(params, headers) {
        return (StatusCode::UNAUTHORIZED, "token needed\n").into_response();
    }
    if !crate::source::hook_inbox::same_token(&action.csrf, &page.csrf) {
        return (StatusCode::FORBIDDEN, "stale or forged form; reload the page\n").into_response();
    }
    let mut store = page.store.lock().unwrap_or_else(|e| e.into_inner());
    match work(&mut store) {
        Ok(()) => Redirect::to(&page.url("/")).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    }
}

/// Each configured source with how far it was read and how far it is behind.
fn sources(store: &Store, configured: &[Source]) -> Result<Vec<minijinja::Value>, String> {
    let rows: HashMap<String, (u64, String)> = store
        .source_rows()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| (r.key, (r.resume_offset, r.updated_at)))
        .collect();
    Ok(configured
        .iter()
        .map(|source| {
            let (offset, updated) = rows.get(&source.key()).cloned().unwrap_or_default();
            let size = std::fs::metadata(&source.path).map(|m| m.len()).unwrap_or(0);
            context! {
                kind => source.kind.as_str(),
                path => source.path.display().to_string(),
                offset => offset,
                lag => size.saturating_sub(offset),
                updated => updated,
            }
        })
        .collect())
}

/// The last events with their deliveries.
fn recent_calls(store: &Store) -> Result<Vec<minijinja::Value>, String> {
    let events: Vec<Event> = store
        .recent_events(EVENTS_SHOWN)
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    let mut call_ids: Vec<String> = events.iter().map(|e| e.call_id.clone()).collect();
    call_ids.dedup();
    let deliveries = store.deliveries_of(&call_ids).map_err(|e| e.to_string())?;
    Ok(events
        .iter()
        .map(|event| {
            let mine: Vec<minijinja::Value> = deliveries
                .iter()
                .filter(|d| d.event_id == event.id)
                .map(|d| {
                    context! {
                        rule => &d.rule, status => &d.status, attempts => d.attempts, error => &d.last_error,
                        latency => latency(&d.created_at, &d.updated_at, &d.status),
                    }
                })
                .collect();
            context! {
                at => crate::event::rfc3339(&event.at),
                type => event.kind.as_str(),
                direction => event.direction.as_str(),
                outcome => event.outcome.map(|o| o.as_str()),
                remote_number => &event.remote_number,
                remote_name => &event.remote_name,
                call_id => &event.call_id,
                deliveries => mine,
            }
        })
        .collect())
}

/// Job made → delivered, for delivered jobs.
fn latency(created: &str, updated: &str, status: &str) -> Option<String> {
    if status != "done" {
        return None;
    }
    let created: jiff::Timestamp = created.parse().ok()?;
    let updated: jiff::Timestamp = updated.parse().ok()?;
    let ms = updated.duration_since(created).as_secs_f64() * 1000.0;
    Some(format!("{ms:.0} ms"))
}

async fn serve_metrics(State(page): State<Arc<Page>>, Query(params): Query<Params>, headers: HeaderMap) -> Response {
    if !page.allowed(&params, &headers) {
        return (StatusCode::UNAUTHORIZED, "token needed\n").into_response();
    }
    let mut store = page.store.lock().unwrap_or_else(|e| e.into_inner());
    match refresh(&mut store, &page.sources, &page.metrics) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            page.metrics.encode(),
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// Sets the gauges the state database knows (the outbox, how far sources are behind).
fn refresh(store: &mut Store, configured: &[Source], metrics: &Metrics) -> Result<(), String> {
    let mut jobs = Vec::new();
    for s in store.job_stats().map_err(|e| e.to_string())? {
        for (state, n) in [
            ("waiting", s.pending),
            ("retrying", s.retrying),
            ("done", s.done),
            ("dead", s.dead),
        ] {
            jobs.push((s.rule.clone(), state, n));
        }
    }
    let (oldest, _) = store.waiting_extremes().map_err(|e| e.to_string())?;
    let age = oldest
        .and_then(|job| job.created_at.parse::<jiff::Timestamp>().ok())
        .map_or(0.0, |made| {
            jiff::Timestamp::now().duration_since(made).as_secs_f64().max(0.0)
        });
    let disabled = store.disabled_endpoints().map_err(|e| e.to_string())?.len();
    metrics.set_outbox(&jobs, age, disabled);
    for source in sources(store, configured)? {
        let text = |name: &str| {
            source
                .get_attr(name)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let lag = source
            .get_attr("lag")
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        metrics.set_behind(&text("kind"), &text("path"), lag);
    }
    Ok(())
}

/// A job due this long ago and still not tried means the outbox is stuck.
pub const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// What keeps callhook from doing its job: the problems sources and outbox reported,
/// and a job overdue by more than [`STUCK_AFTER`].
pub fn problems(store: &Store, metrics: &Metrics) -> Result<Vec<String>, crate::store::StoreError> {
    let mut problems = metrics.problems();
    let (_, overdue) = store.waiting_extremes()?;
    if let Some(job) = overdue {
        let late_ms = jiff::Timestamp::now().as_millisecond() - job.next_at;
        if late_ms > STUCK_AFTER.as_millis() as i64 {
            problems.push(format!(
                "outbox: stuck: job {} (rule {}) due {} s ago and not delivered{}",
                job.id,
                job.rule,
                late_ms / 1000,
                job.last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
            ));
        }
    }
    Ok(problems)
}

/// `/healthz`: `ok` (200) while every source is followed and the outbox is not stuck;
/// else 503 and one line per problem.
async fn healthz(State(page): State<Arc<Page>>, Query(params): Query<Params>, headers: HeaderMap) -> Response {
    if !page.allowed(&params, &headers) {
        return (StatusCode::UNAUTHORIZED, "token needed\n").into_response();
    }
    let store = page.store.lock().unwrap_or_else(|e| e.into_inner());
    match problems(&store, &page.metrics) {
        Ok(problems) if problems.is_empty() => (StatusCode::OK, "ok\n").into_response(),
        Ok(problems) => (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", problems.join("\n"))).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("state database: {error}\n")).into_response(),
    }
}
