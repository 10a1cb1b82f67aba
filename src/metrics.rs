//! What callhook counts while it runs, and whether it is healthy: one [`Metrics`]
//! handle (a `prometheus-client` registry and the health of each part), made by the
//! wiring (`daemon`) and handed, cloned, to the sources, the pipeline and the outbox,
//! which count without knowing who reads the counts; the status server encodes them
//! (`/metrics`) and asks [`Metrics::problems`] (`/healthz`).
//!
//! This module names no stage: callers pass plain names (source kind and path, event
//! type, rule), so every stage may use it.
//!
//! Counted:
//!
//! - per source (`kind`, `path`): lines and bytes read, parse errors, whether it is
//!   followed (`callhook_source_up`);
//! - events emitted by `source`, `type` and `outcome`; rule firings by `rule`;
//!   deliveries by `rule`, `action` (`webhook`, `command`) and `result` (`done`,
//!   `retry`, `dead`, `disabled`);
//! - the outbox by state, its oldest waiting job's age, endpoints disabled and how far
//!   each source is behind its file (set from the state database when scraped);
//! - events held by the correlator for a richer source;
//! - latency, in seconds: a line appended to a file → its event emitted, and → its
//!   webhook or command delivered.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::bounded;

/// Append times kept for jobs not delivered yet, at most (the oldest are forgotten:
/// their delivery is then not timed).
const APPEND_TIMES_KEPT: usize = 10_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    kind: String,
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: String,
    r#type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    rule: String,
    // Static: one copy (the rule's name) per delivery, not three.
    action: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    rule: String,
    state: String,
}

/// Seconds, from a millisecond to a minute.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

struct Inner {
    registry: Registry,
    lines: Family<SourceLabels, Counter>,
    bytes: Family<SourceLabels, Counter>,
    parse_errors: Family<SourceLabels, Counter>,
    source_up: Family<SourceLabels, Gauge>,
    behind: Family<SourceLabels, Gauge>,
    events: Family<EventLabels, Counter>,
    firings: Family<RuleLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    jobs: Family<JobLabels, Gauge>,
    oldest_waiting: Gauge<f64, AtomicU64>,
    endpoints_disabled: Gauge,
    held: Gauge,
    append_to_event: Histogram,
    append_to_delivery: Histogram,
    health: Mutex<Health>,
    appended: Mutex<AppendTimes>,
}

/// What is wrong, by part.
#[derive(Debug, Default)]
struct Health {
    /// Source key → its problem, if any.
    sources: BTreeMap<String, Option<String>>,
    outbox: Option<String>,
}

/// When the line behind each undelivered job was appended, by job key.
#[derive(Debug, Default)]
struct AppendTimes {
    by_job: HashMap<String, SystemTime>,
}

impl AppendTimes {
    /// Notes `job_key`'s time; over [`APPEND_TIMES_KEPT`], forgets the oldest quarter
    /// (a receiver down for long: those deliveries are then not timed).
    fn insert(&mut self, job_key: &str, appended: SystemTime) {
        self.by_job.insert(job_key.to_owned(), appended);
        if self.by_job.len() > APPEND_TIMES_KEPT {
            bounded::keep_newest(&mut self.by_job, APPEND_TIMES_KEPT * 3 / 4, |at| *at);
        }
    }

    /// Takes `job_key`'s time, once its job is delivered.
    fn remove(&mut self, job_key: &str) -> Option<SystemTime> {
        let appended = self.by_job.remove(job_key);
        bounded::shrink_after_burst(&mut self.by_job);
        appended
    }
}

/// The shared handle; clones count into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry, every metric registered (names get `callhook_`, counters
    /// `_total`).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("callhook");
        let inner = Inner {
            lines: Family::default(),
            bytes: Family::default(),
            parse_errors: Family::default(),
            source_up: Family::default(),
            behind: Family::default(),
            events: Family::default(),
            firings: Family::default(),
            deliveries: Family::default(),
            jobs: Family::default(),
            oldest_waiting: Gauge::default(),
            endpoints_disabled: Gauge::default(),
            held: Gauge::default(),
            append_to_event: latency_histogram(),
            append_to_delivery: latency_histogram(),
            health: Mutex::default(),
            appended: Mutex::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "source_lines_read",
            "Lines (or CSV rows) read, per source",
            inner.lines.clone(),
        );
        r.register("source_bytes_read", "Bytes read, per source", inner.bytes.clone());
        r.register(
            "parse_errors",
            "Lines or rows that could not be read, per source",
            inner.parse_errors.clone(),
        );
        r.register(
            "source_up",
            "1 while the source is followed, 0 when it is not (see /healthz)",
            inner.source_up.clone(),
        );
        r.register(
            "source_behind_bytes",
            "How far each source is behind its file's end",
            inner.behind.clone(),
        );
        r.register(
            "events",
            "Events emitted, by source kind, type and outcome",
            inner.events.clone(),
        );
        r.register("rule_firings", "Jobs made by each rule", inner.firings.clone());
        r.register(
            "deliveries",
            "Delivery attempts, by rule, action and result",
            inner.deliveries.clone(),
        );
        r.register("outbox_jobs", "Outbox jobs, by rule and state", inner.jobs.clone());
        r.register(
            "outbox_oldest_waiting_seconds",
            "Age of the oldest job waiting or retrying",
            inner.oldest_waiting.clone(),
        );
        r.register(
            "endpoints_disabled",
            "Endpoints a 410 Gone disabled",
            inner.endpoints_disabled.clone(),
        );
        r.register(
            "correlator_held_events",
            "Events held for a richer source's",
            inner.held.clone(),
        );
        r.register(
            "append_to_event_seconds",
            "A line appended to a followed file -> its event emitted",
            inner.append_to_event.clone(),
        );
        r.register(
            "append_to_delivery_seconds",
            "A line appended to a followed file -> its job delivered",
            inner.append_to_delivery.clone(),
        );
        Metrics {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// The counters of one source, by its key (as the state database names it), kind
    /// and path. Registers it as healthy.
    pub fn source(&self, key: &str, kind: &str, path: &str) -> SourceMetrics {
        let labels = SourceLabels {
            kind: kind.to_owned(),
            path: path.to_owned(),
        };
        let source = SourceMetrics {
            metrics: self.clone(),
            key: key.to_owned(),
            lines: self.inner.lines.get_or_create_owned(&labels),
            bytes: self.inner.bytes.get_or_create_owned(&labels),
            errors: self.inner.parse_errors.get_or_create_owned(&labels),
            up: self.inner.source_up.get_or_create_owned(&labels),
        };
        source.set_problem(None);
        source
    }

    /// An event was emitted (`outcome` for `ended` events); `appended` is when the
    /// line it came from was appended, if known.
    pub fn event_emitted(&self, source: &str, kind: &str, outcome: Option<&str>, appended: Option<SystemTime>) {
        self.inner
            .events
            .get_or_create(&EventLabels {
                source: source.to_owned(),
                r#type: kind.to_owned(),
                outcome: outcome.unwrap_or("").to_owned(),
            })
            .inc();
        if let Some(seconds) = appended.and_then(seconds_since) {
            self.inner.append_to_event.observe(seconds);
        }
    }

    /// A rule made the job `job_key` from an event whose line was appended at
    /// `appended` (if known: its delivery is then timed).
    pub fn rule_fired(&self, rule: &str, job_key: &str, appended: Option<SystemTime>) {
        self.inner
            .firings
            .get_or_create(&RuleLabels { rule: rule.to_owned() })
            .inc();
        let Some(appended) = appended else { return };
        let mut times = self.inner.appended.lock().unwrap_or_else(|e| e.into_inner());
        times.insert(job_key, appended);
    }

    /// A delivery attempt of job `job_key` ended with `result` (`done`, `retry`,
    /// `dead`, `disabled`); `action` is `webhook` or `command`.
    pub fn delivered(&self, rule: &str, action: &'static str, result: &'static str, job_key: &str) {
        self.inner
            .deliveries
            .get_or_create(&DeliveryLabels {
                rule: rule.to_owned(),
                action,
                result,
            })
            .inc();
        if result == "retry" {
            return;
        }
        let appended = {
            let mut times = self.inner.appended.lock().unwrap_or_else(|e| e.into_inner());
            times.remove(job_key)
        };
        if result == "done"
            && let Some(seconds) = appended.and_then(seconds_since)
        {
            self.inner.append_to_delivery.observe(seconds);
        }
    }

    /// Events the correlator holds now.
    pub fn set_held_events(&self, held: usize) {
        self.inner.held.set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// The outbox task stopped (`Some(why)`), or runs (`None`).
    pub fn set_outbox_problem(&self, problem: Option<String>) {
        self.inner.health.lock().unwrap_or_else(|e| e.into_inner()).outbox = problem;
    }

    /// The outbox as the state database has it now: jobs by (rule, state), the oldest
    /// waiting job's age in seconds, endpoints disabled.
    pub fn set_outbox(&self, jobs: &[(String, &str, u64)], oldest_waiting_s: f64, disabled: usize) {
        self.inner.jobs.clear();
        for (rule, state, count) in jobs {
            self.inner
                .jobs
                .get_or_create(&JobLabels {
                    rule: rule.clone(),
                    state: (*state).to_owned(),
                })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        self.inner.oldest_waiting.set(oldest_waiting_s);
        self.inner.endpoints_disabled.set(disabled as i64);
    }

    /// How far the source (`kind`, `path`) is behind its file's end, in bytes.
    pub fn set_behind(&self, kind: &str, path: &str, bytes: u64) {
        self.inner
            .behind
            .get_or_create(&SourceLabels {
                kind: kind.to_owned(),
                path: path.to_owned(),
            })
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Everything, in the OpenMetrics text format (which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// What is wrong now, one line each; empty when healthy.
    pub fn problems(&self) -> Vec<String> {
        let health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
        health
            .sources
            .iter()
            .filter_map(|(key, problem)| problem.as_ref().map(|p| format!("source {key}: {p}")))
            .chain(health.outbox.iter().map(|p| format!("outbox: {p}")))
            .collect()
    }
}

/// Seconds from `then` to now (none when the clock went back).
fn seconds_since(then: SystemTime) -> Option<f64> {
    SystemTime::now().duration_since(then).ok().map(|d| d.as_secs_f64())
}

/// One source's counters and health; cheap to use on every read.
#[derive(Clone)]
pub struct SourceMetrics {
    metrics: Metrics,
    key: String,
    lines: Counter,
    bytes: Counter,
    errors: Counter,
    up: Gauge,
}

impl std::fmt::Debug for SourceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceMetrics({})", self.key)
    }
}

impl SourceMetrics {
    /// Counters of a source nobody reads (tests, tools).
    pub fn detached(key: &str) -> SourceMetrics {
        Metrics::new().source(key, "", "")
    }

    /// `bytes` read, holding `lines` complete lines (or rows).
    pub fn read(&self, bytes: u64, lines: u64) {
        self.bytes.inc_by(bytes);
        self.lines.inc_by(lines);
    }

    /// A line or row could not be read.
    pub fn parse_error(&self) {
        self.errors.inc();
    }

    /// The source is followed (`None`), or why not.
    pub fn set_problem(&self, problem: Option<String>) {
        self.up.set(i64::from(problem.is_none()));
        let mut health = self.metrics.inner.health.lock().unwrap_or_else(|e| e.into_inner());
        health.sources.insert(self.key.clone(), problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_encode_and_problems_name_the_part() {
        let metrics = Metrics::new();
        let source = metrics.source("sip_trace:/x/a.log", "sip_trace", "/x/a.log");
        source.read(120, 3);
        source.parse_error();
        metrics.event_emitted("sip_trace", "ended", Some("missed"), Some(SystemTime::now()));
        metrics.rule_fired("hook", "k1", Some(SystemTime::now()));
        metrics.delivered("hook", "webhook", "done", "k1");
        let text = metrics.encode();
        for line in [
            "callhook_source_bytes_read_total{kind=\"sip_trace\",path=\"/x/a.log\"} 120",
            "callhook_source_lines_read_total{kind=\"sip_trace\",path=\"/x/a.log\"} 3",
            "callhook_parse_errors_total{kind=\"sip_trace\",path=\"/x/a.log\"} 1",
            "callhook_events_total{source=\"sip_trace\",type=\"ended\",outcome=\"missed\"} 1",
            "callhook_rule_firings_total{rule=\"hook\"} 1",
            "callhook_deliveries_total{rule=\"hook\",action=\"webhook\",result=\"done\"} 1",
            "callhook_append_to_delivery_seconds_count 1",
            "callhook_source_up{kind=\"sip_trace\",path=\"/x/a.log\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(metrics.problems().is_empty());
        source.set_problem(Some("folder /x is gone".into()));
        metrics.set_outbox_problem(Some("stopped".into()));
        assert_eq!(
            metrics.problems(),
            vec!["source sip_trace:/x/a.log: folder /x is gone", "outbox: stopped"]
        );
        assert!(
            metrics
                .encode()
                .contains("callhook_source_up{kind=\"sip_trace\",path=\"/x/a.log\"} 0")
        );
    }
}
