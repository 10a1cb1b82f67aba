//! Security on a shared machine (Linux; other accounts are played by `nobody` through
//! `setpriv` when the tests run as root, as CI does): the state is owner-only, a
//! squatter on the hook port after a kill -9 gets neither the token nor a forged event
//! in (the hook spools instead), a state directory another account planted or can write
//! is refused, and a second daemon on one state directory is refused.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Child, Trace, append, hook, invite};

const NOBODY: &str = "65534";

fn callhook() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callhook"));
    command.env("CALLHOOK_LOG", "info");
    command
}

/// Whether another account can be played: root with `setpriv` (util-linux).
fn can_be_nobody() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !(root && setpriv) {
        eprintln!("skipping the other-account part: needs root and setpriv (CI runs as root)");
    }
    root && setpriv
}

/// Runs `args` as `nobody`; whether it succeeded.
fn as_nobody(args: &[&str]) -> bool {
    Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("phone.log"), b"").unwrap();
    let path = dir.join("callhook.yaml");
    std::fs::write(
        &path,
        "version: 1
state_dir: state
sources:
  - { kind: sip_trace, path: phone.log, start_at: beginning, poll_interval: 20ms, time_zone: UTC }
  - { kind: hook }
",
    )
    .unwrap();
    path
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn the_state_is_owner_only_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    // Where the world can look, as a home directory usually is.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = config(dir.path());
    let state = dir.path().join("state");
    let child = Child::run(
        Path::new(env!("CARGO_BIN_EXE_callhook")),
        Path::new(""),
        &state,
        Some(&path),
    );
    wait_until("the daemon's hook address", || state.join("hook.addr").exists());
    let mut trace = Trace::new();
    trace.at("10:00:00").sip(
        true,
        &invite("sec-1@pbx", "\"Secret Caller\" <sip:5550100@pbx>", "<sip:101@pbx>", 1),
    );
    append(&dir.path().join("phone.log"), trace.text.as_bytes());
    wait_until("the event", || child.lines.lock().unwrap().len() == 1);
    // A message spooled while it runs (as when it answers late).
    let spooled = callhook::source::hook_inbox::Inbox::new(&state)
        .spool(&callhook::forward::message(callhook::parse::hook::HookEvent::Ring, "5550101", None).unwrap())
        .unwrap();
    assert_eq!(mode(&spooled), 0o600);
    child.kill();

    assert_eq!(mode(&state), 0o700, "state directory");
    for file in [
        "callhook.db",
        "callhook.db-wal",
        "callhook.db-shm",
        "hook.token",
        "hook.addr",
        "callhook.lock",
    ] {
        let path = state.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    assert_eq!(mode(&state.join("hook-spool")), 0o700, "spool");
    if can_be_nobody() {
        for file in ["callhook.db", "callhook.db-wal", "hook.token"] {
            let path = state.join(file);
            assert!(
                !as_nobody(&["cat", path.to_str().unwrap()]),
                "another account read {file}"
            );
        }
        assert!(!as_nobody(&["ls", state.join("hook-spool").to_str().unwrap()]));
    }
}

#[test]
fn a_squatter_on_the_old_hook_port_learns_nothing_and_the_hook_spools() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());
    let state = dir.path().join("state");
    let child = Child::run(
        Path::new(env!("CARGO_BIN_EXE_callhook")),
        Path::new(""),
        &state,
        Some(&path),
    );
    wait_until("the daemon's hook address", || state.join("hook.addr").exists());
    std::thread::sleep(Duration::from_millis(200));
    let token = std::fs::read_to_string(state.join("hook.token")).unwrap();
    let address = std::fs::read_to_string(state.join("hook.addr")).unwrap();
    // kill -9: hook.addr still names the port.
    child.kill();
    let squatter = std::net::TcpListener::bind(address.trim()).unwrap();
    let heard = std::thread::spawn(move || {
        let (mut stream, _) = squatter.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut hello = String::new();
        reader.read_line(&mut hello).unwrap();
        // The best a squatter can do: answer without knowing the token.
        writeln!(
            stream,
            "{{\"nonce\":\"{}\",\"proof\":\"{}\"}}",
            "2".repeat(64),
            "3".repeat(64)
        )
        .unwrap();
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        hello + &String::from_utf8_lossy(&rest)
    });
    let said = hook(&state, "ring", "0800FAKE");
    assert!(said.contains("spooled"), "{said}");
    let heard = heard.join().unwrap();
    assert!(!heard.contains(token.trim()), "the token went to the squatter: {heard}");
    assert!(!heard.contains("0800FAKE"), "the message went to the squatter: {heard}");

    // The spooled message reaches the real daemon when it starts again; nothing forged.
    let child = Child::run(
        Path::new(env!("CARGO_BIN_EXE_callhook")),
        Path::new(""),
        &state,
        Some(&path),
    );
    wait_until("the spooled event", || !child.lines.lock().unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let lines = child.kill();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("0800FAKE"));
    assert_ne!(
        std::fs::read_to_string(state.join("hook.token")).unwrap(),
        token,
        "the token is new at each start"
    );
}

#[test]
fn a_state_dir_another_account_planted_or_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join("state");
    std::fs::create_dir(&planted).unwrap();
    std::fs::write(planted.join("hook.token"), "0".repeat(64)).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    if can_be_nobody() {
        let owner = Command::new("chown").args([NOBODY]).arg(&planted).status().unwrap();
        assert!(owner.success());
    }
    let out = callhook()
        .args(["run", "--trace"])
        .arg(dir.path().join("phone.log"))
        .arg("--state-dir")
        .arg(&planted)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing state directory"), "{stderr}");
    // Nothing the planter left was taken: no hook address was announced.
    assert!(!planted.join("hook.addr").exists());
}

#[test]
fn a_second_daemon_on_one_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());
    let state = dir.path().join("state");
    let child = Child::run(
        Path::new(env!("CARGO_BIN_EXE_callhook")),
        Path::new(""),
        &state,
        Some(&path),
    );
    wait_until("the daemon's hook address", || state.join("hook.addr").exists());
    let address = std::fs::read_to_string(state.join("hook.addr")).unwrap();
    let out = callhook().args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pid = child.process.id();
    assert!(
        stderr.contains(&format!("another callhook run (PID {pid}) uses state directory")),
        "{stderr}"
    );
    // The first one's announcement is untouched.
    assert_eq!(std::fs::read_to_string(state.join("hook.addr")).unwrap(), address);
    child.kill();
}
