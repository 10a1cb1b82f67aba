//! Fleet benchmark: `cargo bench --bench fleet`.
//!
//! N desks, each a real `callhook run` following a trace of its own (the fixtures,
//! Call-IDs renumbered per desk and copy) that grows at `RATE` calls/s, publish every
//! event through a real broker (`nats-server -js`, then `mosquitto`, started here on
//! loopback ports) to a central `callhook run`, whose webhook rule posts each to a local
//! receiver. Prints events/s, p50/p99/max from the trace entry written to the webhook
//! received, and events lost, per broker.
//!
//! `DESKS` (default 50), `RATE` (calls/s per desk, default 2), `SECONDS` (default 30),
//! `BROKERS` (`nats,mqtt`, default both). `FLEET_KEEP=1` keeps the run's folder (the
//! desks' and the central's databases, for a breakdown of the latency).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/fleet.rs"]
mod fleet;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use callhook::event::SourceKind;
use callhook::parse::log_time::parse_timestamp;
use callhook::source::sip_trace::SipTraceReader;
use callhook::track::sip::TrackerConfig;
use fleet::{Broker, Kind};

const CASES: [&str; 5] = ["basic", "burst", "mixed-tcp", "forking-early", "noise"];

fn main() {
    let desks: usize = env_or("DESKS", 50);
    let rate: f64 = env_or("RATE", 2.0);
    let seconds: f64 = env_or("SECONDS", 30.0);
    let brokers = std::env::var("BROKERS").unwrap_or_else(|_| "nats,mqtt".into());
    println!(
        "{desks} desks x {rate} calls/s for {seconds} s, each a `callhook run`; central `callhook run` -> local webhook receiver"
    );
    for name in brokers.split(',') {
        let kind = match name.trim() {
            "nats" => Kind::Nats,
            "mqtt" => Kind::Mqtt,
            other => panic!("BROKERS: {other:?} is not nats or mqtt"),
        };
        run(kind, desks, rate, seconds);
    }
}

/// One desk's trace: its log entries, and after which entry each event is known.
struct Plan {
    entries: Vec<Vec<u8>>,
    /// event id → entry index
    due: HashMap<String, usize>,
    calls: usize,
}

fn plan(desk: &str, calls_wanted: usize) -> Plan {
    let calls_per_copy: usize = CASES
        .iter()
        .map(|c| common::expected(c).iter().filter(|(_, t)| t == "ringing").count())
        .sum();
    let copies = calls_wanted.div_ceil(calls_per_copy).max(1);
    let trace = fleet::desk_trace(desk, &CASES, copies);
    let entries: Vec<Vec<u8>> = split_entries(&trace).into_iter().map(<[u8]>::to_vec).collect();
    let mut reader = SipTraceReader::new(
        jiff::civil::date(2026, 11, 23),
        TrackerConfig::new(SourceKind::SipTrace, "x"),
    );
    let mut due = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        reader.push(
            entry,
            &mut |e| {
                due.insert(e.id, index);
            },
            &mut |_| {},
        );
    }
    Plan {
        entries,
        due,
        calls: copies * calls_per_copy,
    }
}

fn run(kind: Kind, desks: usize, rate: f64, seconds: f64) {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("FLEET_KEEP").is_some() {
        println!("{kind:?}: keeping {}", dir.path().display());
    }
    let Some(broker) = Broker::start(kind, &dir.path().join("broker")) else {
        return;
    };
    let receiver = common::Receiver::start();
    let central_config = fleet::central_config(dir.path(), kind, &broker.url(), &receiver.url);
    let binary = Path::new(env!("CARGO_BIN_EXE_callhook"));
    let central = common::Child::run(binary, Path::new(""), Path::new(""), Some(&central_config));
    std::thread::sleep(Duration::from_millis(500));
    let calls_wanted = (rate * seconds) as usize;
    let mut plans = Vec::new();
    let mut children = Vec::new();
    let mut files = Vec::new();
    for index in 0..desks {
        let name = format!("d{index}");
        // A folder of its own, as on a real desk: a desk watches its trace's folder,
        // and in a shared one every desk would wake for every other desk's writes (50
        // times the wake-ups, most of the machine's CPU at 50 desks).
        let home = dir.path().join(&name);
        std::fs::create_dir(&home).unwrap();
        let trace = home.join(format!("{name}.log"));
        std::fs::write(&trace, b"").unwrap();
        // The configuration in a folder of its own, as where `callhook run` looks by
        // default (`%APPDATA%\\callhook`, away from MicroSIP's log): its watch would
        // otherwise wake for every write to the trace beside it.
        let config_dir = home.join("callhook");
        std::fs::create_dir(&config_dir).unwrap();
        let config = fleet::desk_config(&config_dir, &name, &trace, kind, &broker.url());
        children.push(common::Child::run(binary, &trace, Path::new(""), Some(&config)));
        files.push(std::fs::OpenOptions::new().append(true).open(&trace).unwrap());
        plans.push(plan(&name, calls_wanted));
    }
    std::thread::sleep(Duration::from_secs(2));
    // Every desk's entries on one schedule, each desk's calls at `rate` (whole copies of
    // the fixtures: at least `seconds`).
    let duration = Duration::from_secs_f64(plans[0].calls as f64 / rate);
    println!(
        "{kind:?}: {desks} desks x {} calls at {rate} calls/s each ({:.0} s)",
        plans[0].calls,
        duration.as_secs_f64()
    );
    let mut schedule: Vec<(Duration, usize, usize)> = Vec::new();
    for (desk, plan) in plans.iter().enumerate() {
        let offset = duration.mul_f64(desk as f64 / desks as f64 / plan.entries.len().max(1) as f64);
        for index in 0..plan.entries.len() {
            schedule.push((
                offset + duration.mul_f64(index as f64 / plan.entries.len() as f64),
                desk,
                index,
            ));
        }
    }
    schedule.sort();
    let mut written: Vec<Vec<Option<Instant>>> = plans.iter().map(|p| vec![None; p.entries.len()]).collect();
    let start = Instant::now();
    for (when, desk, index) in &schedule {
        if let Some(wait) = (start + *when).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        files[*desk].write_all(&plans[*desk].entries[*index]).unwrap();
        written[*desk][*index] = Some(Instant::now());
    }
    let wrote_for = start.elapsed();
    // Every event's webhook-id → (desk, entry).
    let mut wanted: HashMap<String, (usize, usize)> = HashMap::new();
    for (desk, plan) in plans.iter().enumerate() {
        for (id, index) in &plan.due {
            wanted.insert(
                callhook::dispatch::signing::message_id(&format!("{id}.hook")),
                (desk, *index),
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && distinct(&receiver) < wanted.len() {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    report(kind, &receiver, &wanted, &written, wrote_for);
    if std::env::var_os("FLEET_KEEP").is_some() {
        keep_times(dir.path(), &plans, &receiver, &written);
    }
    for child in children {
        child.kill();
    }
    central.kill();
    if std::env::var_os("FLEET_KEEP").is_some() {
        let _ = dir.keep();
    }
}

/// `times.csv` in the kept folder: each event's id, desk, when its entry was written
/// and when its webhook came (Unix µs), to set beside the databases' timestamps.
fn keep_times(dir: &Path, plans: &[Plan], receiver: &common::Receiver, written: &[Vec<Option<Instant>>]) {
    let (now, wall) = (Instant::now(), std::time::SystemTime::now());
    let unix = |at: Instant| {
        let wall_at = wall - now.saturating_duration_since(at);
        wall_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
    };
    let requests = receiver.requests.lock().unwrap().clone();
    let mut came: HashMap<&str, Instant> = HashMap::new();
    for request in &requests {
        if let Some(id) = request.header("webhook-id") {
            came.entry(id).or_insert(request.at);
        }
    }
    let mut out = String::from("event,desk,written_us,received_us\n");
    for (desk, plan) in plans.iter().enumerate() {
        for (id, index) in &plan.due {
            let hook = callhook::dispatch::signing::message_id(&format!("{id}.hook"));
            if let (Some(at), Some(got)) = (written[desk][*index], came.get(hook.as_str())) {
                out.push_str(&format!("{id},{desk},{},{}\n", unix(at), unix(*got)));
            }
        }
    }
    std::fs::write(dir.join("times.csv"), out).unwrap();
}

fn distinct(receiver: &common::Receiver) -> usize {
    let requests = receiver.requests.lock().unwrap();
    requests
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

fn report(
    kind: Kind,
    receiver: &common::Receiver,
    wanted: &HashMap<String, (usize, usize)>,
    written: &[Vec<Option<Instant>>],
    wrote_for: Duration,
) {
    let requests = receiver.requests.lock().unwrap().clone();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut latencies = Vec::new();
    let mut last = None;
    for request in &requests {
        let Some(id) = request.header("webhook-id") else {
            continue;
        };
        *seen.entry(id).or_default() += 1;
        if seen[id] == 1
            && let Some((desk, index)) = wanted.get(id)
            && let Some(at) = written[*desk][*index]
        {
            latencies.push(request.at.saturating_duration_since(at));
            last = Some(last.map_or(request.at, |l: Instant| l.max(request.at)));
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    let lost = wanted.keys().filter(|id| !seen.contains_key(id.as_str())).count();
    let repeated: usize = seen.values().map(|n| n - 1).sum();
    println!("{kind:?}:");
    println!("  events expected:        {}", wanted.len());
    println!(
        "  events/s:               {:.1} (written over {:.1} s)",
        latencies.len() as f64 / wrote_for.as_secs_f64(),
        wrote_for.as_secs_f64()
    );
    println!("  append -> webhook p50:  {:.1} ms", pct(0.50));
    println!("  append -> webhook p99:  {:.1} ms", pct(0.99));
    println!("  append -> webhook max:  {:.1} ms", pct(1.0));
    println!("  lost:                   {lost}");
    println!("  came twice:             {repeated}");
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Log entries: a timestamped line and the untimestamped lines after it.
fn split_entries(trace: &[u8]) -> Vec<&[u8]> {
    let mut entries = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in trace.split_inclusive(|&b| b == b'\n') {
        if offset > start && parse_timestamp(line).is_some() {
            entries.push(&trace[start..offset]);
            start = offset;
        }
        offset += line.len();
    }
    entries.push(&trace[start..]);
    entries
}
