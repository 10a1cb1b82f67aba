//! Helpers shared by the integration tests: replaying bytes, fixtures, synthetic traces.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use callhook::event::{Event, SourceKind};
use callhook::parse::pjsip::TraceError;
use callhook::source::sip_trace::SipTraceReader;
use callhook::track::sip::TrackerConfig;
use jiff::civil::date;
use jiff::tz::TimeZone;

/// Replays `bytes` as one SIP trace (dated 2026-11-23, UTC), fed in chunks of `chunk`.
pub fn replay_chunked(
    bytes: &[u8],
    chunk: usize,
    configure: impl FnOnce(&mut TrackerConfig),
) -> (Vec<Event>, Vec<TraceError>) {
    let mut config = TrackerConfig::new(SourceKind::SipTrace, "test.log");
    config.time_zone = TimeZone::UTC;
    configure(&mut config);
    let mut reader = SipTraceReader::new(date(2026, 11, 23), config);
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        reader.push(piece, &mut |e| events.push(e), &mut |e| errors.push(e));
    }
    reader.finish(&mut |e| events.push(e), &mut |e| errors.push(e));
    (events, errors)
}

pub fn replay(bytes: &[u8]) -> (Vec<Event>, Vec<TraceError>) {
    replay_chunked(bytes, 1 << 20, |_| {})
}

/// Every `tests/fixtures/pjsip/<case>/` directory that has a trace and expected events.
pub fn pjsip_fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pjsip");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures/pjsip exists")
        .map(|e| e.unwrap().path())
        .filter(|d| d.join("phone.log").is_file() && d.join("expected.ndjson").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Builds PJSIP log text line by line, for flows no fixture has.
pub struct Trace {
    pub text: String,
    millis: u64,
    crlf: bool,
}

impl Trace {
    pub fn new() -> Trace {
        Trace {
            text: String::new(),
            millis: 8 * 3_600_000,
            crlf: false,
        }
    }

    pub fn crlf() -> Trace {
        Trace {
            crlf: true,
            ..Trace::new()
        }
    }

    /// Moves the clock on.
    pub fn wait(&mut self, millis: u64) -> &mut Self {
        self.millis += millis;
        self
    }

    pub fn at(&mut self, hh_mm_ss: &str) -> &mut Self {
        let parts: Vec<u64> = hh_mm_ss.split(':').map(|p| p.parse().unwrap()).collect();
        self.millis = ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000;
        self
    }

    /// Sets the clock to a time of day in milliseconds (e.g. now, for live tests).
    pub fn at_ms(&mut self, ms_of_day: u64) -> &mut Self {
        self.millis = ms_of_day;
        self
    }

    fn stamp(&self) -> String {
        let m = self.millis % 86_400_000;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            m / 3_600_000,
            m / 60_000 % 60,
            m / 1000 % 60,
            m % 1000
        )
    }

    fn eol(&self) -> &'static str {
        if self.crlf { "\r\n" } else { "\n" }
    }

    /// A plain log line from `sender`.
    pub fn line(&mut self, sender: &str, message: &str) -> &mut Self {
        let eol = self.eol();
        let stamp = self.stamp();
        let _ = write!(self.text, "{stamp} {sender:>22}  .{message}{eol}");
        self
    }

    /// An RX (`received`) or TX block holding `sip` (header lines joined by `\n`).
    pub fn sip(&mut self, received: bool, sip: &str) -> &mut Self {
        let message: String = sip.lines().map(|l| format!("{l}\r\n")).collect::<String>() + "\r\n";
        let first = sip.lines().next().unwrap_or_default();
        let cseq = sip.lines().find_map(|l| l.strip_prefix("CSeq: ")).unwrap_or("1 INVITE");
        let (number, method) = cseq.split_once(' ').unwrap();
        let description = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            let code = &rest[..3];
            format!("Response msg {code}/{method}/cseq={number}")
        } else {
            format!("Request msg {}/cseq={number}", first.split(' ').next().unwrap())
        };
        let (dir, buffer, word) = if received {
            ("RX", "rdata0x1", "from")
        } else {
            ("TX", "tdta0x2", "to")
        };
        let header = format!(
            "{dir} {} bytes {description} ({buffer}) {word} UDP 127.0.0.1:5070:",
            message.len()
        );
        self.line("pjsua_core.c", &header);
        let eol = self.eol();
        // PJSIP writes the message as is (CRLF inside), then its end marker.
        self.text.push_str(&message);
        let _ = write!(self.text, "{eol}--end msg--{eol}");
        self
    }
}

/// SIP message text for tests: an INVITE from `from` to `to` with `call_id`.
pub fn invite(call_id: &str, from: &str, to: &str, cseq: u32) -> String {
    format!(
        "INVITE sip:x@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{cseq}\nFrom: {from};tag=ft\nTo: {to}\nCall-ID: {call_id}\nCSeq: {cseq} INVITE\nContent-Length: 0"
    )
}

/// A response to `method` (with `cseq`) on `call_id`; `to_tag` adds a tag to To.
pub fn response(code: u16, call_id: &str, from: &str, to: &str, cseq: u32, method: &str) -> String {
    format!(
        "SIP/2.0 {code} Reason\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{cseq}\nFrom: {from};tag=ft\nTo: {to};tag=tt\nCall-ID: {call_id}\nCSeq: {cseq} {method}\nContent-Length: 0"
    )
}

/// An in-dialog request (BYE, CANCEL, REFER, ...).
pub fn request(method: &str, call_id: &str, from: &str, to: &str, cseq: u32, extra: &str) -> String {
    let mut text = format!(
        "{method} sip:x@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr{cseq}\nFrom: {from};tag=ft\nTo: {to};tag=tt\nCall-ID: {call_id}\nCSeq: {cseq} {method}\n"
    );
    if !extra.is_empty() {
        text.push_str(extra);
        text.push('\n');
    }
    text.push_str("Content-Length: 0");
    text
}

/// A daemon running in-process on its own thread, events into a channel.
pub struct Daemon {
    pub events: std::sync::mpsc::Receiver<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Daemon {
    /// Starts watching `trace` (need not exist) with state in `state_dir`.
    pub fn start(trace: &Path, state_dir: &Path, start_at: callhook::source::config::StartAt) -> Daemon {
        let mut source = callhook::source::config::Source::sip_trace(trace);
        source.start_at = start_at;
        source.poll_interval = std::time::Duration::from_millis(20);
        source.time_zone = TimeZone::UTC;
        Daemon::with_config(callhook::config::Config::with_sources(state_dir, vec![source]))
    }

    /// Waits until `n` events came (at most 10 s) and returns them as JSON values.
    pub fn take(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(line) => got.push(serde_json::from_str(&line).unwrap()),
                Err(_) => panic!("only {} of {n} events came: {got:#?}", got.len()),
            }
        }
        got
    }

    /// Asserts that no further event comes within `millis`.
    pub fn quiet_for(&self, millis: u64) {
        if let Ok(line) = self.events.recv_timeout(std::time::Duration::from_millis(millis)) {
            panic!("unexpected event: {line}");
        }
    }

    /// Stops the daemon (as Ctrl-C would) and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops the daemon and returns the events it emitted and nobody took yet.
    pub fn stop_then_take(mut self) -> Vec<serde_json::Value> {
        self.shutdown();
        self.events
            .try_iter()
            .map(|line| serde_json::from_str(&line).unwrap())
            .collect()
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap().unwrap();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.shutdown();
        }
    }
}

/// Appends bytes to a file (creating it), as a logger does.
pub fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}

/// A fixture trace's bytes.
pub fn fixture(case: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pjsip")
            .join(case)
            .join("phone.log"),
    )
    .unwrap()
}

/// A fixture's expected events: (call_id, type) in order.
pub fn expected(case: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pjsip")
            .join(case)
            .join("expected.ndjson"),
    )
    .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["call_id"].as_str().unwrap().to_owned(),
                v["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (call_id, type) of events, sorted, for comparing sets.
pub fn keys(events: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut keys: Vec<_> = events
        .iter()
        .map(|v| {
            (
                v["call_id"].as_str().unwrap().to_owned(),
                v["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    keys.sort();
    keys
}

pub fn sorted(mut keys: Vec<(String, String)>) -> Vec<(String, String)> {
    keys.sort();
    keys
}

/// Several fixtures one after the other, as one long trace (their Call-IDs differ).
pub fn long_trace() -> Vec<u8> {
    let mut trace = Vec::new();
    for case in [
        "basic",
        "burst",
        "mixed-tcp",
        "forking-early",
        "transfer-blind",
        "noise",
        "redirect",
        "hold-reinvite",
    ] {
        trace.extend_from_slice(&fixture(case));
    }
    trace
}

/// A `callhook run` child process with its stdout collected line by line.
pub struct Child {
    pub process: std::process::Child,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Child {
    /// Starts `callhook run --trace TRACE --state-dir STATE --stdout --start-at beginning`,
    /// or with `config`, `callhook run -c CONFIG --stdout`.
    pub fn run(binary: &Path, trace: &Path, state: &Path, config: Option<&Path>) -> Child {
        use std::io::BufRead;
        let mut command = std::process::Command::new(binary);
        match config {
            Some(config) => command.args(["run", "--stdout", "-c"]).arg(config),
            None => command
                .args(["run", "--stdout", "--start-at", "beginning", "--trace"])
                .arg(trace)
                .arg("--state-dir")
                .arg(state),
        };
        let mut process = command
            .env(
                "CALLHOOK_LOG",
                std::env::var("FLEET_DEBUG_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("callhook starts");
        let stdout = process.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Child {
            process,
            lines,
            reader: Some(reader),
        }
    }

    /// kill -9, then collects what it printed.
    pub fn kill(mut self) -> Vec<String> {
        let _ = self.process.kill();
        let _ = self.process.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

impl Drop for Child {
    /// A test that fails midway leaves no daemon behind.
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Ids of events, one per line of NDJSON.
pub fn ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// A tiny deterministic random source (xorshift), so failures can be replayed.
pub struct Random(pub u64);

impl Random {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Result of a crash-recovery run.
#[derive(Debug)]
pub struct CrashReport {
    pub cycles: usize,
    pub expected: usize,
    pub stored: usize,
    pub lost: usize,
    pub extra: usize,
    pub printed_unique: usize,
    pub printed_duplicates: usize,
    /// With a receiver: jobs made, jobs whose webhook never arrived, and deliveries
    /// that arrived more than once (each with the same `webhook-id`).
    pub jobs: usize,
    pub jobs_lost: usize,
    pub deliveries_repeated: usize,
}

/// Appends `trace` in random pieces to a file while a `callhook run` child is killed
/// with SIGKILL and restarted `cycles` times; then lets a last child finish and compares
/// what the state database holds, and what was printed, with a full replay.
pub fn crash_cycles(binary: &Path, cycles: usize, seed: u64, with_webhooks: bool) -> CrashReport {
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("MicroSIP_log.txt");
    let state = dir.path().join("state");
    let receiver = with_webhooks.then(Receiver::start);
    let config_path = receiver.as_ref().map(|receiver| {
        let path = dir.path().join("callhook.yaml");
        std::fs::write(
            &path,
            format!(
                "version: 1\nstate_dir: state\nsources:\n  - {{ kind: sip_trace, path: {}, start_at: beginning, poll_interval: 20ms }}\nrules:\n  - name: hook\n    webhook: {{ url: \"{}/x\", retry: {{ first: 100ms, factor: 1 }} }}\n",
                trace_path.display(),
                receiver.url
            ),
        )
        .unwrap();
        path
    });
    let trace = long_trace();
    let expected: std::collections::BTreeSet<String> = replay(&trace).0.into_iter().map(|e| e.id).collect();
    append(&trace_path, b"");
    let writer_path = trace_path.clone();
    let writer_trace = trace.clone();
    let mut random = Random(seed);
    let pieces: Vec<usize> = (0..)
        .map(|_| 1 + random.below(4000) as usize)
        .take_while({
            let mut total = 0;
            move |n| {
                let go = total < writer_trace.len();
                total += n;
                go
            }
        })
        .collect();
    let pause_us = 1_000_000 * cycles as u64 / 4 / pieces.len().max(1) as u64; // ~0.25 s per cycle of writing
    let writer = std::thread::spawn(move || {
        let mut offset = 0;
        for n in pieces {
            let end = (offset + n).min(trace.len());
            append(&writer_path, &trace[offset..end]);
            offset = end;
            std::thread::sleep(std::time::Duration::from_micros(pause_us));
        }
    });
    let mut printed = Vec::new();
    for _ in 0..cycles {
        let child = Child::run(binary, &trace_path, &state, config_path.as_deref());
        std::thread::sleep(std::time::Duration::from_millis(20 + random.below(300)));
        printed.extend(child.kill());
    }
    writer.join().unwrap();
    // A last run that is let to finish reading.
    let child = Child::run(binary, &trace_path, &state, config_path.as_deref());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let stored = stored_ids(&state).len();
        let delivered = receiver.as_ref().map(|r| {
            r.requests
                .lock()
                .unwrap()
                .iter()
                .filter_map(|q| q.header("webhook-id").map(str::to_owned))
                .collect::<std::collections::HashSet<_>>()
                .len()
        });
        let done = stored >= expected.len() && delivered.is_none_or(|d| d >= expected.len());
        if done || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    printed.extend(child.kill());
    let stored = stored_ids(&state);
    let stored_set: std::collections::BTreeSet<String> = stored.iter().cloned().collect();
    let printed_ids = ids(&printed);
    let printed_set: std::collections::BTreeSet<String> = printed_ids.iter().cloned().collect();
    let (jobs, jobs_lost, deliveries_repeated) = match &receiver {
        None => (0, 0, 0),
        Some(receiver) => {
            let keys: Vec<String> = receiver
                .requests
                .lock()
                .unwrap()
                .iter()
                .filter_map(|q| q.header("webhook-id").map(str::to_owned))
                .collect();
            let unique: std::collections::BTreeSet<String> = keys.iter().cloned().collect();
            // The webhook-id a job is sent with: made from its key (event id and rule).
            let wanted: std::collections::BTreeSet<String> = expected
                .iter()
                .map(|id| callhook::dispatch::signing::message_id(&format!("{id}.hook")))
                .collect();
            (
                wanted.len(),
                wanted.difference(&unique).count(),
                keys.len() - unique.len(),
            )
        }
    };
    CrashReport {
        jobs,
        jobs_lost,
        deliveries_repeated,
        cycles,
        expected: expected.len(),
        stored: stored.len(),
        lost: expected.difference(&stored_set).count(),
        extra: stored_set.difference(&expected).count() + (stored.len() - stored_set.len()),
        printed_unique: printed_set.len(),
        printed_duplicates: printed_ids.len() - printed_set.len(),
    }
}

/// Ids of the events in a state database.
pub fn stored_ids(state: &Path) -> Vec<String> {
    let Ok(store) = callhook::store::Store::open(state) else {
        return Vec::new();
    };
    store
        .all_events()
        .unwrap_or_default()
        .iter()
        .map(|json| {
            serde_json::from_str::<serde_json::Value>(json).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTP/1.1 receiver on 127.0.0.1 (a thread per connection, keep-alive, each
/// response written at once with TCP_NODELAY so the receiver never adds latency),
/// recording every request; answers from a queue of status codes (200 once empty).
pub struct Receiver {
    pub url: String,
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub answers: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u16>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::on(0)
    }

    /// On a given port (0: any free one).
    pub fn on(port: u16) -> Receiver {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("receiver binds");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let requests: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let answers: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u16>>> = Default::default();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, a, st) = (requests.clone(), answers.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, a, st) = (r.clone(), a.clone(), st.clone());
                        std::thread::spawn(move || serve(stream, r, a, st));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}"),
            port,
            requests,
            answers,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// A free port nobody listens on (for a receiver that is down).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Waits until at least `n` requests came (at most `seconds`), returns them all.
    pub fn wait_for(&self, n: usize, seconds: u64) -> Vec<Received> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        loop {
            let count = self.requests.lock().unwrap().len();
            if count >= n || std::time::Instant::now() > deadline {
                return self.requests.lock().unwrap().clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// One keep-alive connection: requests in, answers out, until the peer closes.
fn serve(
    stream: std::net::TcpStream,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    answers: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u16>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{BufRead, Read, Write};
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(200)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(stream);
    loop {
        let mut first = String::new();
        match reader.read_line(&mut first) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        let path = first.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = answers.lock().unwrap().pop_front().unwrap_or(200);
        requests.lock().unwrap().push(Received {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: std::time::Instant::now(),
        });
        let retry_after = if status == 429 || status == 503 {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        let response = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n{retry_after}\r\nok");
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A configuration: one trace source at `trace` (start at its beginning, fast polling,
/// UTC) and the given `rules:` YAML.
pub fn config_with_rules(dir: &Path, trace: &Path, rules: &str) -> callhook::config::Config {
    let text = format!(
        "version: 1\nstate_dir: state\nsources:\n  - kind: sip_trace\n    path: {}\n    start_at: beginning\n    poll_interval: 20ms\n    time_zone: UTC\nrules:\n{rules}",
        trace.display()
    );
    let path = dir.join("callhook.yaml");
    std::fs::write(&path, text).unwrap();
    callhook::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

impl Daemon {
    /// Starts the daemon with a whole configuration.
    pub fn with_config(config: callhook::config::Config) -> Daemon {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(callhook::daemon::run(
                    config,
                    callhook::daemon::Output::Channel(tx),
                    async {
                        let _ = stopped.await;
                    },
                ))
                .map_err(|e| e.to_string())
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        Daemon {
            events: rx,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// Runs `callhook hook EVENT NUMBER --state-dir STATE` as MicroSIP would, returning its
/// stdout (it says whether the daemon took the message or it was spooled).
pub fn hook(state: &Path, event: &str, number: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["hook", event, number, "--state-dir"])
        .arg(state)
        .env("CALLHOOK_LOG", "debug")
        .output()
        .expect("callhook hook runs");
    assert!(
        output.status.success(),
        "callhook hook {event} {number}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Writes a microsip.ini as MicroSIP does: UTF-16LE with BOM, CRLF, the whole file at
/// once, with `calls` as its `[Calls]` entries (keys from 0).
pub fn write_ini(path: &Path, calls: &[impl AsRef<str>]) {
    let mut text = String::from("\u{feff}[Settings]\r\nenableLog=0\r\n\r\n[Calls]\r\n");
    for (key, call) in calls.iter().enumerate() {
        text.push_str(&format!("{key}={}\r\n", call.as_ref()));
    }
    let bytes: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// Compares `events` with `dir/expected.ndjson` on the fields listed there, call by
/// call and in order; `Err` lists every difference.
pub fn matches_expected(dir: &Path, events: &[Event]) -> Result<(), String> {
    use std::collections::BTreeMap;
    fn by_call(events: impl IntoIterator<Item = serde_json::Value>) -> BTreeMap<String, Vec<serde_json::Value>> {
        let mut calls: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for event in events {
            let id = event["call_id"].as_str().unwrap_or_default().to_owned();
            calls.entry(id).or_default().push(event);
        }
        calls
    }
    let text = std::fs::read_to_string(dir.join("expected.ndjson")).unwrap();
    let want = by_call(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap()),
    );
    let got = by_call(events.iter().map(|e| serde_json::to_value(e).unwrap()));
    let mut problems = Vec::new();
    for (call_id, want_events) in &want {
        let got_events = got.get(call_id).cloned().unwrap_or_default();
        if got_events.len() != want_events.len() {
            let types: Vec<_> = got_events.iter().map(|e| e["type"].clone()).collect();
            problems.push(format!(
                "call {call_id}: events {types:?}, expected {}",
                want_events.len()
            ));
            continue;
        }
        for (g, w) in got_events.iter().zip(want_events) {
            for (field, value) in w.as_object().unwrap() {
                if &g[field] != value {
                    problems.push(format!(
                        "call {call_id} {}: {field} = {}, expected {value}",
                        w["type"], g[field]
                    ));
                }
            }
        }
    }
    for call_id in got.keys().filter(|c| !want.contains_key(*c)) {
        problems.push(format!("call {call_id}: unexpected events"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}
