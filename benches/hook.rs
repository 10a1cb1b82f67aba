//! `callhook hook` wall time, as MicroSIP waits for it: `cargo bench --bench hook`
//! (`RUNS=n` invocations per case, default 200). Each invocation is a real process start,
//! timed from spawn to exit: with the daemon down (the message is spooled) and with a
//! real `callhook run` up (the message goes over loopback and is stored before the
//! answer). Prints median, p90, p99 and max, and how many were delivered or spooled.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    let down = invoke(&state, runs);
    report("daemon down (spooled)", &down);
    // The daemon takes up what the first case spooled.
    let config = dir.path().join("callhook.yaml");
    std::fs::write(&config, "version: 1\nstate_dir: state\nsources:\n  - kind: hook\n").unwrap();
    let mut daemon = start_daemon(&config, &state);
    let up = invoke(&state, runs);
    report("daemon up (loopback)", &up);
    let _ = daemon.kill();
    let _ = daemon.wait();
}

struct Run {
    wall: Duration,
    delivered: bool,
}

/// `runs` invocations, one after another, as calls come: ring, then end, per number.
fn invoke(state: &Path, runs: usize) -> Vec<Run> {
    (0..runs)
        .map(|i| {
            let event = if i % 2 == 0 { "cmdCallRing" } else { "cmdCallEnd" };
            let number = format!("+4930555{:04}", i / 2);
            let started = Instant::now();
            let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
                .args(["hook", event, &number, "--state-dir"])
                .arg(state)
                .stderr(Stdio::null())
                .output()
                .expect("callhook hook runs");
            let wall = started.elapsed();
            assert!(output.status.success());
            Run {
                wall,
                delivered: String::from_utf8_lossy(&output.stdout).contains("delivered"),
            }
        })
        .collect()
}

fn start_daemon(config: &Path, state: &Path) -> Child {
    let _ = std::fs::remove_file(state.join("hook.addr"));
    let child = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["run", "-c"])
        .arg(config)
        .stderr(Stdio::null())
        .spawn()
        .expect("callhook run starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !state.join("hook.addr").is_file() {
        assert!(Instant::now() < deadline, "daemon did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let it take the spool left by the first case before timing.
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn report(case: &str, runs: &[Run]) {
    let mut ms: Vec<f64> = runs.iter().map(|r| r.wall.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    let delivered = runs.iter().filter(|r| r.delivered).count();
    println!(
        "callhook hook, {case}: {} runs, median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} delivered, {} spooled",
        ms.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        ms[ms.len() - 1],
        delivered,
        runs.len() - delivered
    );
}
