//! Peer benchmark: `cargo bench --bench peer`. callhook against a tuned general-purpose
//! log shipper on the same path: a line appended to MicroSIP's trace → an HTTP request
//! at a local receiver.
//!
//! syslog-ng (Debian `syslog-ng-core` + `syslog-ng-mod-http`, installed with apt-get
//! when absent) follows the trace with a file source polling every 10 ms
//! (`follow-freq(0.01)`, no parsing) and posts every line to the receiver (one request
//! a line, no durable queue); `callhook run` follows the same file with one `generic`
//! webhook rule (durable outbox). Both run in one go against one receiver (a thread per
//! keep-alive connection, answers at once), while the benchmark appends the fixtures'
//! log entries at 20 calls/s (`RATE`, `SECONDS`; `CALLHOOK_BIN` measures another build). For each entry that makes a call event
//! known it prints, per program, entry written → request received, p50/p99/max:
//! syslog-ng's request for the entry's last line, callhook's webhook for the event.
//! When syslog-ng cannot be installed or started, it says why and measures callhook
//! alone.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/live_trace.rs"]
mod live_trace;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use live_trace::{build_trace, due_entries, env_or, quantile_ms, split_entries};

fn main() {
    let rate: f64 = env_or("RATE", 20.0);
    let seconds: f64 = env_or("SECONDS", 20.0);
    let (trace, calls) = build_trace((rate * seconds) as usize, |case| {
        common::expected(case).iter().filter(|(_, t)| t == "ringing").count()
    });
    let entries = split_entries(&trace);
    let due = due_entries(&entries);

    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("MicroSIP_log.txt");
    std::fs::write(&trace_path, b"").unwrap();
    let receiver = common::Receiver::start();
    let mut syslog_ng = match syslog_ng_binary() {
        Ok(binary) => start_syslog_ng(&binary, dir.path(), &trace_path, &receiver.url)
            .map_err(|why| println!("syslog-ng: not measured: {why}"))
            .ok(),
        Err(why) => {
            println!("syslog-ng: not measured: {why}");
            None
        }
    };
    let config = dir.path().join("callhook.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstate_dir: state\nsources:\n  - kind: sip_trace\n    path: {}\nrules:\n  - name: hook\n    webhook: {{ url: \"{}/callhook\" }}\n",
            trace_path.display(),
            receiver.url
        ),
    )
    .unwrap();
    let mut callhook = Command::new(live_trace::callhook_binary())
        .args(["run", "-c"])
        .arg(&config)
        .env("CALLHOOK_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));

    let written = append_on_schedule(&trace_path, &entries, calls as f64 / rate);
    let received_all = || receiver.requests.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (received_all(), Instant::now());
    while Instant::now() < deadline && last.1.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
        if received_all() != last.0 {
            last = (received_all(), Instant::now());
        }
    }
    let _ = callhook.kill();
    let _ = callhook.wait();
    if let Some(child) = syslog_ng.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }

    let requests = receiver.requests.lock().unwrap().clone();
    println!(
        "appended:                {calls} calls at {rate} calls/s ({} log entries), {} events",
        entries.len(),
        due.len()
    );
    let event_entries: Vec<usize> = {
        let mut v: Vec<usize> = due.values().copied().collect();
        v.sort();
        v.dedup();
        v
    };
    if syslog_ng.is_some() {
        let lines = syslog_ng_arrivals(&entries, &requests);
        let mut latencies: Vec<Duration> = event_entries
            .iter()
            .filter_map(|&i| Some(lines.get(&i)?.saturating_duration_since(written[i])))
            .collect();
        report("syslog-ng", &mut latencies, event_entries.len());
    }
    let mut latencies: Vec<Duration> = requests
        .iter()
        .filter(|r| r.path == "/callhook")
        .filter_map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).ok()?;
            let index = *due.get(body["id"].as_str()?)?;
            Some(r.at.saturating_duration_since(written[index]))
        })
        .collect();
    report("callhook", &mut latencies, due.len());
}

/// Appends each entry at its time, spread over `seconds`; returns when each was written.
fn append_on_schedule(path: &Path, entries: &[&[u8]], seconds: f64) -> Vec<Instant> {
    let duration = Duration::from_secs_f64(seconds);
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    let mut written = Vec::with_capacity(entries.len());
    let start = Instant::now();
    for (index, entry) in entries.iter().enumerate() {
        let when = start + duration.mul_f64(index as f64 / entries.len() as f64);
        if let Some(wait) = when.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        file.write_all(entry).unwrap();
        written.push(Instant::now());
    }
    written
}

fn report(name: &str, latencies: &mut [Duration], wanted: usize) {
    latencies.sort();
    println!(
        "{name:<10} append -> request received: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} of {wanted} arrived)",
        quantile_ms(latencies, 0.50),
        quantile_ms(latencies, 0.99),
        quantile_ms(latencies, 1.0),
        latencies.len()
    );
}

/// When syslog-ng's request for the last line of each entry arrived (by entry index).
/// Requests come in file order, one a line; lines it skips (empty ones) are passed over.
fn syslog_ng_arrivals(entries: &[&[u8]], requests: &[common::Received]) -> HashMap<usize, Instant> {
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        for line in String::from_utf8_lossy(entry).lines() {
            let line = line.trim();
            if !line.is_empty() {
                lines.push((index, line.to_owned()));
            }
        }
    }
    let mut arrivals = HashMap::new();
    let mut next = 0;
    for request in requests.iter().filter(|r| r.path == "/syslog-ng") {
        let body = request.body.trim();
        if body.is_empty() {
            continue;
        }
        let Some(found) = lines[next..].iter().position(|(_, l)| l == body) else {
            continue;
        };
        next += found;
        let (index, _) = lines[next];
        let last_of_entry = lines.get(next + 1).is_none_or(|(i, _)| *i != index);
        if last_of_entry {
            arrivals.insert(index, request.at);
        }
        next += 1;
    }
    arrivals
}

/// The syslog-ng binary, installed with apt-get (Debian) when absent.
fn syslog_ng_binary() -> Result<String, String> {
    let found = |name: &str| {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    };
    let module = Path::new("/usr/lib/syslog-ng").exists()
        && Command::new("dpkg")
            .args(["-s", "syslog-ng-mod-http"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if let Some(binary) = found("syslog-ng")
        && module
    {
        return Ok(binary.display().to_string());
    }
    println!("syslog-ng: installing syslog-ng-core and syslog-ng-mod-http with apt-get");
    let status = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "syslog-ng-core",
            "syslog-ng-mod-http",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!(
            "apt-get install failed ({status}); run it as root, or install syslog-ng-core and syslog-ng-mod-http"
        ));
    }
    found("syslog-ng")
        .map(|b| b.display().to_string())
        .ok_or_else(|| "installed, but no syslog-ng binary found".to_owned())
}

/// Starts syslog-ng in the foreground with its own state in `dir`: the trace, polled
/// every 10 ms, each line posted as is to `url`/syslog-ng.
fn start_syslog_ng(binary: &str, dir: &Path, trace: &Path, url: &str) -> Result<Child, String> {
    let config = dir.join("syslog-ng.conf");
    std::fs::write(
        &config,
        format!(
            "@version: 3.38\n\
             options {{ stats-freq(0); }};\n\
             source s_trace {{ file(\"{}\" follow-freq(0.01) flags(no-parse)); }};\n\
             destination d_http {{ http(url(\"{url}/syslog-ng\") method(\"POST\") body(\"${{MESSAGE}}\")); }};\n\
             log {{ source(s_trace); destination(d_http); }};\n",
            trace.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = dir.join("syslog-ng.stderr");
    let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut child = Command::new(binary)
        .args(["-F", "--no-caps", "-f"])
        .arg(&config)
        .arg(format!("--persist-file={}", dir.join("syslog-ng.persist").display()))
        .arg(format!("--pidfile={}", dir.join("syslog-ng.pid").display()))
        .arg(format!("--control={}", dir.join("syslog-ng.ctl").display()))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {binary}: {e}"))?;
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = child.try_wait() {
        let why = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(format!("syslog-ng exited ({status}): {}", why.trim()));
    }
    Ok(child)
}
