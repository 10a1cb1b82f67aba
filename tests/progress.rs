//! `callhook replay` on a large trace draws a progress bar when stderr is a terminal and
//! nothing when it is piped (issue 15's acceptance: "a tmux capture of `replay` on a
//! 200 MB trace shows a progress bar; piped, none").
//!
//! The terminal is a detached tmux session on a private server socket; the test reads
//! the pane with `tmux capture-pane -p` while replay runs (the bar is cleared when it
//! ends). Without tmux the test says it was skipped (`./scripts/test` installs it).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How much trace to replay: large enough that replay runs for a few seconds in a
/// debug build (the bar is drawn at most 20 times a second, and cleared at the end).
const TRACE_BYTES: usize = 60 * 1024 * 1024;

fn fixture() -> String {
    format!("{}/tests/fixtures/pjsip/basic/phone.log", env!("CARGO_MANIFEST_DIR"))
}

/// A trace of about `TRACE_BYTES`: the fixture, repeated.
fn large_trace(path: &Path) {
    let one = std::fs::read(fixture()).unwrap();
    let mut text = Vec::with_capacity(TRACE_BYTES + one.len());
    while text.len() < TRACE_BYTES {
        text.extend_from_slice(&one);
    }
    std::fs::write(path, text).unwrap();
}

/// `tmux` on this test's own server socket, so other tmux users are left alone.
fn tmux(socket: &str, args: &[&str]) -> Output {
    Command::new("tmux")
        // Run from inside tmux too: this is a server of its own, not a nested session.
        .env_remove("TMUX")
        .args(["-L", socket])
        .args(args)
        .output()
        .expect("tmux runs")
}

/// The replay command line (shell words), its output thrown away.
fn replay_line(trace: &Path, done: &Path) -> String {
    format!(
        "'{}' replay --date 2026-01-02 --tz UTC '{}' >/dev/null; touch '{}'; sleep 600",
        env!("CARGO_BIN_EXE_callhook"),
        trace.display(),
        done.display()
    )
}

/// Whether a captured pane shows the replay progress bar (see `progress_bar` in
/// `src/cli.rs`: a bar, bytes read of the total, speed and time left).
fn shows_a_bar(pane: &str) -> bool {
    pane.lines()
        .any(|line| line.contains("left)") && line.contains("MiB") && (line.contains('█') || line.contains('░')))
}

#[test]
fn replay_draws_a_progress_bar_on_a_terminal_and_none_when_piped() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (./scripts/test installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("MicroSIP_log.txt");
    large_trace(&trace);
    let done = dir.path().join("done");
    let socket = format!("callhook-progress-{}", std::process::id());
    let started = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "replay",
            "-x",
            "160",
            "-y",
            "20",
            &replay_line(&trace, &done),
        ],
    );
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = None;
    let mut last = String::new();
    while Instant::now() < deadline && !done.exists() {
        let capture = tmux(&socket, &["capture-pane", "-p", "-t", "replay"]);
        last = String::from_utf8_lossy(&capture.stdout).into_owned();
        if shows_a_bar(&last) {
            seen = Some(last.clone());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux(&socket, &["kill-server"]);
    let pane = seen.unwrap_or_else(|| panic!("no progress bar in the pane while replay ran; last capture:\n{last}"));
    eprintln!("captured:\n{}", pane.trim_end());

    // The same command with stderr piped: the summary, and no bar nor escape codes.
    let out = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["replay", "--date", "2026-01-02", "--tz", "UTC"])
        .arg(&trace)
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replay: "), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes on a pipe: {stderr:?}");
    assert!(
        !shows_a_bar(&stderr) && !stderr.contains('█') && !stderr.contains('░'),
        "{stderr}"
    );
}
