//! `callhook demo`: the whole job on a built-in trace, no set-up needed.
//!
//! Writes a real PJSIP trace (four calls: answered, missed, outgoing, busy; bundled into
//! the binary) line by line into a fresh log file in a temporary folder, at the pace its
//! timestamps give, while the same daemon `callhook run` uses follows that file with the
//! bundled `rules/demo.yaml`: a helpdesk webhook on every event and an alert on missed
//! calls, both delivered through the durable outbox to a webhook receiver the demo runs
//! on loopback ([`receiver`]), and a local command (a screen pop: this program with
//! `demo --popup`) on incoming calls. Each event is shown as it is known, each delivery
//! as it arrives with its latency (the trace line written → the request received: what
//! a user waits for), each command when it has run; then a summary. On a terminal the lines are for reading; piped (or with
//! `--json`) stdout carries the events as NDJSON and the rest goes to stderr.

pub mod receiver;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::daemon::{self, DaemonError, Output};
use crate::event::{Event, escape_controls};
use crate::metrics::Metrics;
use crate::parse::log_time::parse_timestamp;
use crate::store::Store;

/// The bundled trace (tests/fixtures/pjsip/basic, recorded from PJSIP 2.15).
const TRACE: &[u8] = include_bytes!("../tests/fixtures/pjsip/basic/phone.log");
/// The bundled rules.
const RULES: &str = include_str!("../rules/demo.yaml");
/// Longest pause between two lines, whatever the timestamps say.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Play the trace this many times faster than it was recorded.
    pub speed: f64,
    /// Events as NDJSON on stdout, the rest on stderr.
    pub json: bool,
    /// Keep running after the trace (until Ctrl-C), following the file.
    pub follow: bool,
    /// Serve the status page (and `/metrics`, `/healthz`) on `127.0.0.1`, a free port,
    /// open it in the browser when on a terminal, and keep it up after the summary
    /// until Ctrl-C.
    pub status_page: bool,
}

/// What the demo showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemoSummary {
    pub events: usize,
    pub webhooks: usize,
    pub commands: usize,
    /// Trace line written → webhook received, milliseconds.
    pub latencies_ms: Vec<f64>,
}

/// Runs the demo; see the module docs.
pub async fn run(
    options: DemoOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<DemoSummary, DaemonError> {
    let folder = std::env::temp_dir().join(format!("callhook-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    let create_error = |source| DaemonError::CreateDir {
        path: folder.clone(),
        source,
    };
    std::fs::create_dir_all(&folder).map_err(create_error)?;
    let trace = folder.join("MicroSIP_log.txt");
    let (url, received) = receiver::start().await.map_err(create_error)?;
    let config = demo_config(&folder, &trace, &url)?;
    let state_dir = config.state_dir.clone();
    let mut show = Show::new(options.json);
    show.note(&format!("writing a recorded MicroSIP trace to {}", trace.display()));
    show.note(&format!(
        "rules: rules/demo.yaml (helpdesk and missed-alert webhooks to {url}, screen-pop command)"
    ));
    let metrics = Metrics::new();
    let page = match options.status_page {
        true => Some(status_page(&config, &metrics, &mut show).await?),
        false => None,
    };
    let (events_tx, events_rx) = mpsc::channel::<String>();
    let written = show.written.clone();
    let printer = std::thread::spawn(move || show.run(events_rx, received, state_dir));
    let writer_trace = trace.clone();
    let speed = options.speed;
    let writer = tokio::task::spawn_blocking(move || write_trace(&writer_trace, speed, &written));
    let follow = options.follow;
    let mut stop = std::pin::pin!(stop);
    let result = daemon::run_with(config, Output::Channel(events_tx), metrics, async {
        let _ = writer.await;
        if follow {
            stop.as_mut().await;
        } else {
            // Time for the last lines to be read and the last deliveries to arrive.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    })
    .await;
    let summary = printer.join().unwrap_or_default();
    if let Some(url) = page.filter(|_| !follow && result.is_ok()) {
        let text = format!("the status page stays up at {url} until Ctrl-C");
        match options.json {
            true => eprintln!("callhook demo: {text}"),
            false => println!("{text}"),
        }
        stop.as_mut().await;
    }
    let _ = std::fs::remove_dir_all(&folder);
    result.map(|()| summary)
}

/// Starts the status page on a free loopback port for the demo's daemon; says where,
/// and opens it in the browser when a user watches (stdout a terminal). Returns its URL.
async fn status_page(config: &Config, metrics: &Metrics, show: &mut Show) -> Result<String, DaemonError> {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let status = crate::status::StatusConfig { listen, token: None };
    let store = Store::open(&config.state_dir)?;
    let address = crate::status::start(&status, store, config.sources.clone(), metrics.clone())
        .await
        .map_err(|source| DaemonError::Status {
            address: listen,
            source,
        })?;
    let url = format!("http://{address}/");
    show.note(&format!(
        "status page: {url} (metrics: {url}metrics, health: {url}healthz)"
    ));
    if std::io::IsTerminal::is_terminal(&std::io::stdout())
        && let Err(error) = opener::open_browser(&url)
    {
        show.note(&format!("cannot open a browser ({error}); open {url} yourself"));
    }
    Ok(url)
}

/// `rules/demo.yaml` pointed at the demo's folder, receiver and program.
fn demo_config(folder: &Path, trace: &Path, url: &str) -> Result<Config, DaemonError> {
    let quoted = |path: &Path| serde_json::to_string(&path.display().to_string()).expect("a string serializes");
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("callhook"));
    let text = RULES
        .replace("http://127.0.0.1:8080", url)
        .replace("path: MicroSIP_log.txt", &format!("path: {}", quoted(trace)))
        .replace(
            "state_dir: ./state",
            &format!("state_dir: {}", quoted(&folder.join("state"))),
        )
        .replace("argv: [\"callhook\",", &format!("argv: [{},", quoted(&program)));
    Config::from_yaml(&text, &folder.join("demo.yaml")).map_err(|e| DaemonError::CreateDir {
        path: folder.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// What the demo prints, and the counts for its summary.
struct Show {
    json: bool,
    summary: DemoSummary,
    /// When each trace line was written, by its time of day (ms).
    written: Written,
    /// The number of each call shown, by call id.
    numbers: HashMap<String, String>,
    /// Command jobs already shown.
    commands_seen: std::collections::HashSet<i64>,
}

/// When the writer wrote the line of each time of day (ms), shared with the printer.
type Written = std::sync::Arc<std::sync::Mutex<HashMap<u32, Instant>>>;

impl Show {
    fn new(json: bool) -> Show {
        Show {
            json,
            summary: DemoSummary::default(),
            written: Written::default(),
            numbers: HashMap::new(),
            commands_seen: Default::default(),
        }
    }

    /// A line for the reader: stderr when stdout carries NDJSON.
    fn note(&mut self, text: &str) {
        if self.json {
            eprintln!("callhook demo: {text}");
        } else {
            println!("{text}");
        }
    }

    /// Shows events, deliveries and commands until the daemon's output ends, then the
    /// summary.
    fn run(
        mut self,
        events: mpsc::Receiver<String>,
        mut received: tokio::sync::mpsc::UnboundedReceiver<receiver::Received>,
        state_dir: PathBuf,
    ) -> DemoSummary {
        let store = Store::open(&state_dir).ok();
        let mut last_look = Instant::now();
        loop {
            match events.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => self.event(&line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(request) = received.try_recv() {
                self.delivery(&request);
            }
            if last_look.elapsed() > Duration::from_millis(100) {
                last_look = Instant::now();
                self.commands(store.as_ref());
            }
        }
        while let Ok(request) = received.try_recv() {
            self.delivery(&request);
        }
        self.commands(store.as_ref());
        self.finish();
        self.summary
    }

    fn event(&mut self, line: &str) {
        self.summary.events += 1;
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            return;
        };
        self.numbers.insert(event.call_id.clone(), event.remote_number.clone());
        if self.json {
            println!("{line}");
            let _ = std::io::stdout().flush();
            return;
        }
        let name = event
            .remote_name
            .as_deref()
            .map(|n| format!(" ({})", escape_controls(n)));
        let outcome = event.outcome.map(|o| format!("  {}", o.as_str())).unwrap_or_default();
        println!(
            "{}  {:<8} {:<8} {}{}{outcome}",
            event.at.strftime("%H:%M:%S%.3f"),
            event.kind.as_str(),
            event.direction.as_str(),
            escape_controls(&event.remote_number),
            name.unwrap_or_default(),
        );
    }

    fn delivery(&mut self, request: &receiver::Received) {
        self.summary.webhooks += 1;
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let latency = request
            .event_ms_of_day
            .and_then(|ms| written.get(&ms))
            .map(|written| request.at.saturating_duration_since(*written).as_secs_f64() * 1000.0);
        drop(written);
        if let Some(ms) = latency {
            self.summary.latencies_ms.push(ms);
        }
        let latency = latency.map(|ms| format!(" in {ms:.1} ms")).unwrap_or_default();
        self.note(&format!("              -> webhook {} 200{latency}", request.path));
    }

    /// Commands the outbox finished since the last look (from the state database).
    fn commands(&mut self, store: Option<&Store>) {
        let Some(store) = store else { return };
        let Ok(jobs) = store.finished_jobs_of("screen-pop") else {
            return;
        };
        for (id, call_id, status, error) in jobs {
            if self.commands_seen.insert(id) {
                self.summary.commands += 1;
                let how = match (status.as_str(), error) {
                    ("done", _) => "ran".to_owned(),
                    (_, Some(error)) => format!("failed: {}", escape_controls(&error)),
                    (other, None) => other.to_owned(),
                };
                let number = self
                    .numbers
                    .get(&call_id)
                    .map(|n| escape_controls(n).into_owned())
                    .unwrap_or_default();
                self.note(&format!("              -> command screen-pop {how} for {number}"));
            }
        }
    }

    fn finish(&mut self) {
        let mut sorted = self.summary.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let text = format!(
            "{} events, {} webhooks delivered (trace line written -> webhook received: p50 {:.1} ms, p99 {:.1} ms), {} commands run",
            self.summary.events,
            self.summary.webhooks,
            at(0.5),
            at(0.99),
            self.summary.commands
        );
        if self.json {
            eprintln!("callhook demo: {text}");
        } else {
            println!("\n{text}");
        }
    }
}

/// Appends the bundled trace line by line, sleeping as its timestamps say.
fn write_trace(path: &Path, speed: f64, written: &Written) {
    let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) else {
        return;
    };
    let mut last_millis = None;
    for line in TRACE.split_inclusive(|&b| b == b'\n') {
        let stamp = parse_timestamp(line).map(|(time, _)| time.millis);
        if let Some(millis) = stamp {
            if let Some(last) = last_millis {
                let pause = Duration::from_millis(u64::from(millis.saturating_sub(last)));
                std::thread::sleep(pause.div_f64(speed.max(0.01)).min(MAX_PAUSE));
            }
            last_millis = Some(millis);
        }
        if file.write_all(line).is_err() {
            return;
        }
        if let Some(millis) = stamp {
            let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
            written.entry(millis).or_insert_with(Instant::now);
        }
    }
}

/// `callhook demo --popup -- NUMBER [NAME]`: the demo's screen pop, a stand-in for a CRM
/// lookup; prints what a real one would show.
pub fn popup(caller: &[String]) -> String {
    let number = caller.first().map(String::as_str).unwrap_or("");
    match caller.get(1).filter(|n| !n.is_empty()) {
        Some(name) => format!("screen pop: {} ({})", escape_controls(name), escape_controls(number)),
        None => format!("screen pop: {}", escape_controls(number)),
    }
}
