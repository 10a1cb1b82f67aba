//! The Windows build (`callhook.exe`, x86_64-pc-windows-gnu) run under Wine: what
//! MicroSIP's users run. `replay` must print byte for byte what the Linux build prints;
//! `run` must follow a trace that a Windows program appends to, truncates, renames and
//! deletes while callhook holds it open; `hook` must reach a running daemon over
//! loopback or spool; a `run:` rule must hand a hostile caller ID to a Windows program
//! as one argument; and a killed process must lose and repeat no event.
//!
//! `./scripts/test` sets all of this up (see `tests/windows/wine.rs`); without it each
//! test prints why it was skipped. What Wine cannot show is in the README (Windows).

mod common;
#[path = "windows/wine.rs"]
mod wine;

use std::collections::BTreeSet;
use std::path::Path;

use wine::{Wine, windows_path};

const LINUX_EXE: &str = env!("CARGO_BIN_EXE_callhook");

/// Every fixture trace, relative to the repository (both builds print the path as
/// given, so both get the same text).
fn fixture_args() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::pjsip_fixtures()
        .iter()
        .map(|dir| {
            let relative = dir.join("phone.log");
            let relative = relative.strip_prefix(root).unwrap();
            relative.to_str().unwrap().replace('\\', "/")
        })
        .collect()
}

#[test]
fn replay_prints_what_the_linux_build_prints_on_every_fixture() {
    let Some(wine) = Wine::find("replay_prints_what_the_linux_build_prints_on_every_fixture") else {
        return;
    };
    let files = fixture_args();
    assert!(files.len() >= 30, "fixtures: {files:?}");
    for tz in ["UTC", "Europe/Berlin", "America/New_York"] {
        let mut args: Vec<String> = ["replay", "--quiet", "--date", "2026-11-23", "--tz", tz]
            .map(String::from)
            .to_vec();
        args.extend(files.iter().cloned());
        let linux = std::process::Command::new(LINUX_EXE)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(linux.status.success());
        let started = std::time::Instant::now();
        let mut command = wine.callhook(&args);
        command.current_dir(env!("CARGO_MANIFEST_DIR"));
        let windows = wine::finish(command);
        eprintln!(
            "replay --tz {tz}: {} files, {} bytes of events, callhook.exe took {:.1} s under Wine",
            files.len(),
            windows.stdout.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            windows.status.success(),
            "callhook.exe replay failed: {}",
            String::from_utf8_lossy(&windows.stderr)
        );
        let (linux, windows) = (
            String::from_utf8(linux.stdout).unwrap(),
            String::from_utf8(windows.stdout).unwrap(),
        );
        assert!(linux.lines().count() > 300, "too few events: {}", linux.lines().count());
        if let Some((n, (l, w))) = linux
            .lines()
            .zip(windows.lines())
            .enumerate()
            .find(|(_, (l, w))| l != w)
        {
            panic!("--tz {tz}: event {n} differs:\n linux:   {l}\n windows: {w}");
        }
        assert_eq!(linux.len(), windows.len(), "--tz {tz}: same events, different length");
        assert!(linux == windows, "--tz {tz}: not byte-identical (line endings?)");
    }
}

/// The event ids a full Linux replay of `bytes` gives, sorted (a live run emits
/// concurrent calls' events as their lines come, a replay in time order).
fn replay_ids(bytes: &[u8]) -> Vec<String> {
    let mut ids: Vec<String> = common::replay(bytes).0.into_iter().map(|e| e.id).collect();
    ids.sort();
    ids
}

/// The ids of `events`, sorted.
fn ids(events: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// The live path on a file that a Windows program (`log_writer.exe`, with the
/// sharing MicroSIP uses) changes while callhook.exe holds it open: every change must
/// succeed (no sharing violation) and every call's events must come, once.
#[test]
fn run_follows_a_log_that_a_windows_writer_appends_truncates_renames_and_deletes() {
    let Some(wine) = Wine::find("run_follows_a_log_that_a_windows_writer_appends_truncates_renames_and_deletes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("MicroSIP_log.txt");
    let piece = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let started = std::time::Instant::now();
    let daemon = wine.spawn(
        [
            "run",
            "--stdout",
            "--start-at",
            "beginning",
            "--trace",
            &windows_path(&trace),
            "--state-dir",
            &windows_path(&dir.path().join("state")),
        ],
        &dir.path().join("run.log"),
    );
    // The file appears and grows in two pieces, the first ending mid-message.
    let basic = common::fixture("basic");
    let cut = basic.len() / 2;
    wine.log_writer("append", &trace, Some(&piece("a1", &basic[..cut])));
    wine.log_writer("append", &trace, Some(&piece("a2", &basic[cut..])));
    let events = daemon.take(replay_ids(&basic).len(), 30);
    assert_eq!(ids(&events), replay_ids(&basic), "appended");
    eprintln!(
        "first events after {:.1} s (Wine start included)",
        started.elapsed().as_secs_f64()
    );

    // MicroSIP starts again: CREATE_ALWAYS on the open file.
    let burst = common::fixture("burst");
    wine.log_writer("truncate", &trace, Some(&piece("b", &burst)));
    assert_eq!(
        ids(&daemon.take(replay_ids(&burst).len(), 20)),
        replay_ids(&burst),
        "truncated"
    );

    // Renamed away (as a user or a log tool would), a new log at the path.
    let redirect = common::fixture("redirect");
    wine.log_writer("rename", &trace, Some(&dir.path().join("MicroSIP_log.old.txt")));
    wine.log_writer("append", &trace, Some(&piece("c", &redirect)));
    assert_eq!(
        ids(&daemon.take(replay_ids(&redirect).len(), 20)),
        replay_ids(&redirect),
        "renamed"
    );

    // Deleted while callhook reads it, then written anew.
    let hold = common::fixture("hold-reinvite");
    wine.log_writer("delete", &trace, None);
    wine.log_writer("truncate", &trace, Some(&piece("d", &hold)));
    assert_eq!(
        ids(&daemon.take(replay_ids(&hold).len(), 20)),
        replay_ids(&hold),
        "deleted"
    );

    // Replacing it by a rename over it (MoveFileEx REPLACE_EXISTING) is refused while
    // any handle is open on it, shared or not, as on Windows without POSIX rename
    // semantics (README: Windows). MicroSIP never does this; nothing is lost: the
    // file stays as it was and callhook goes on reading it.
    let forking = common::fixture("forking-early");
    let replacement = piece("e", &forking);
    let refused = wine.try_log_writer("rename", &replacement, Some(&trace));
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("error 5"),
        "rename over the open log: {refused:?}"
    );
    wine.log_writer("append", &trace, Some(&replacement));
    assert_eq!(
        ids(&daemon.take(replay_ids(&forking).len(), 20)),
        replay_ids(&forking),
        "appended again"
    );
    let extra = daemon.more(1000);
    assert!(extra.is_empty(), "nothing more: {extra:?}\n{}", daemon.log());
    eprintln!("whole live test: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn hook_reaches_a_running_daemon_over_loopback_and_spools_when_none_runs() {
    let Some(wine) = Wine::find("hook_reaches_a_running_daemon_over_loopback_and_spools_when_none_runs") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = windows_path(&dir.path().join("state"));
    let hook = |event: &str, number: &str| {
        let started = std::time::Instant::now();
        let said = wine.output(["hook", event, number, "--state-dir", &state]);
        eprintln!(
            "callhook.exe hook {event}: {:.0} ms under Wine: {}",
            started.elapsed().as_secs_f64() * 1000.0,
            said.trim()
        );
        said
    };
    // No daemon: the event waits in the spool.
    let said = hook("cmdIncomingCall", "5550100");
    assert!(said.contains("spooled"), "{said}");
    let spool = dir.path().join("state/hook-spool");
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 1, "one spooled file");

    let trace = windows_path(&dir.path().join("MicroSIP_log.txt"));
    let daemon = wine.spawn(
        ["run", "--stdout", "--hooks", "--trace", &trace, "--state-dir", &state],
        &dir.path().join("run.log"),
    );
    let taken = daemon.take(1, 30);
    assert_eq!(taken[0]["type"], "ringing");
    assert_eq!(taken[0]["source"], "hook");
    assert_eq!(taken[0]["remote_number"], "5550100");
    // The daemon is up: hooks go over loopback and are stored before the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dir.path().join("state/hook.addr").is_file() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut spooled = 0;
    for (event, number) in [("ring", "5550101"), ("answer", "5550101"), ("end", "5550101")] {
        let said = hook(event, number);
        // A daemon slower than `ANSWER_WITHIN` (a loaded 2-core machine running several
        // Wine processes) gets the message through the spool instead, by design.
        if said.contains("spooled") {
            spooled += 1;
            eprintln!("{event}: spooled, the daemon answered too late under load");
            std::thread::sleep(std::time::Duration::from_millis(1000));
            continue;
        }
        assert!(said.contains("delivered"), "{event}: {said}\n{}", daemon.log());
    }
    assert!(
        spooled < 3,
        "no hook reached the daemon over loopback\n{}",
        daemon.log()
    );
    let events = daemon.take(3, 20);
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ringing", "answered", "ended"]);
    assert!(events.iter().all(|e| e["remote_number"] == "5550101"));
    assert_eq!(events[2]["outcome"], "completed");
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "the spool was taken");
}

/// A hostile caller ID (spaces, quotes, `&|^%`, a would-be second argument) reaches a
/// Windows program started by a `run:` rule as one argument each, unchanged.
#[test]
fn run_rule_hands_a_hostile_caller_id_to_a_windows_program_as_one_argument() {
    let Some(wine) = Wine::find("run_rule_hands_a_hostile_caller_id_to_a_windows_program_as_one_argument") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("MicroSIP_log.txt");
    let out = dir.path().join("argv.out");
    let config = dir.path().join("callhook.yaml");
    let yaml = format!(
        "version: 1\nstate_dir: state\nsources:\n  - kind: sip_trace\n    path: '{}'\n    start_at: beginning\n    poll_interval: 50ms\n    time_zone: UTC\nrules:\n  - name: screen-pop\n    on: ringing\n    run: {{ argv: ['{}', '{}', '{{{{ remote_number }}}}', '{{{{ remote_name }}}}'], stdin: false }}\n",
        windows_path(&trace),
        windows_path(&wine.tool("argv_dump.exe")),
        windows_path(&out),
    );
    std::fs::write(&config, yaml).unwrap();
    let from = r#""Eve \"x\" & calc.exe | del *.* ^%PATH%" <sip:555%20%22%26calc%7C%25x@127.0.0.1>"#;
    let mut log = common::Trace::crlf();
    log.sip(true, &common::invite("hostile-1", from, "<sip:101@127.0.0.1>", 1));
    common::append(&trace, log.text.as_bytes());
    let daemon = wine.spawn(
        ["run", "--stdout", "-c", &windows_path(&config)],
        &dir.path().join("run.log"),
    );
    let event = daemon.take(1, 30).remove(0);
    let number = event["remote_number"].as_str().unwrap();
    let name = event["remote_name"].as_str().unwrap();
    assert_eq!(number, "555 \"&calc|%x");
    assert_eq!(name, "Eve \"x\" & calc.exe | del *.* ^%PATH%");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !out.is_file() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let bytes = std::fs::read(&out).unwrap_or_else(|e| panic!("argv_dump did not run: {e}\n{}", daemon.log()));
    let argv: Vec<&str> = bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| std::str::from_utf8(a).unwrap())
        .collect();
    assert_eq!(argv, [number, name], "each value one argument, byte for byte");
}

/// `callhook.exe run` killed (TerminateProcess-like: the process dies at once) again and
/// again while the trace grows; the state database must hold exactly a full replay's
/// events.
#[test]
fn killed_windows_process_loses_and_repeats_no_event() {
    let Some(wine) = Wine::find("killed_windows_process_loses_and_repeats_no_event") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("MicroSIP_log.txt");
    let state = dir.path().join("state");
    let trace = common::long_trace();
    let expected: BTreeSet<String> = replay_ids(&trace).into_iter().collect();
    let args = [
        "run".to_owned(),
        "--stdout".to_owned(),
        "--start-at".to_owned(),
        "beginning".to_owned(),
        "--trace".to_owned(),
        windows_path(&trace_path),
        "--state-dir".to_owned(),
        windows_path(&state),
    ];
    let cycles = 4;
    let piece = trace.len().div_ceil(cycles);
    let mut random = common::Random(0x0057_1dc0);
    let mut printed = Vec::new();
    for (cycle, chunk) in trace.chunks(piece).enumerate() {
        let daemon = wine.spawn(&args, &dir.path().join(format!("run{cycle}.log")));
        // written in odd pieces while the process starts and reads
        for part in chunk.chunks(1 + random.below(3000) as usize) {
            common::append(&trace_path, part);
            std::thread::sleep(std::time::Duration::from_millis(random.below(20)));
        }
        std::thread::sleep(std::time::Duration::from_millis(300 + random.below(1500)));
        printed.extend(daemon.kill());
    }
    let last = wine.spawn(&args, &dir.path().join("last.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while common::stored_ids(&state).len() < expected.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let log = last.log();
    printed.extend(last.kill());
    let stored = common::stored_ids(&state);
    let stored_set: BTreeSet<String> = stored.iter().cloned().collect();
    let printed_set: BTreeSet<String> = common::ids(&printed).into_iter().collect();
    eprintln!(
        "{cycles} kills: {} expected, {} stored, {} printed ({} unique)",
        expected.len(),
        stored.len(),
        printed.len(),
        printed_set.len()
    );
    assert_eq!(stored.len(), stored_set.len(), "an event stored twice");
    assert_eq!(stored_set, expected, "stored events differ from a full replay\n{log}");
    assert_eq!(printed_set, expected, "every event printed at least once");
}

/// `callhook.exe setup microsip` refuses while a `microsip.exe` runs (here a copy of
/// callhook.exe under that name), then edits a UTF-16 ini with hooks pointing at
/// `callhook-EVENT.exe` links beside the program, and `--undo` restores every byte.
#[test]
fn setup_microsip_refuses_while_microsip_runs_and_round_trips() {
    let Some(wine) = Wine::find("setup_microsip_refuses_while_microsip_runs_and_round_trips") else {
        return;
    };
    let _alone = MICROSIP_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let shim = wine.tool("bcryptprimitives.dll");
    std::fs::copy(&shim, dir.path().join("bcryptprimitives.dll")).unwrap();
    let program = dir.path().join("callhook.exe");
    std::fs::copy(&wine.exe, &program).unwrap();
    let microsip = dir.path().join("microsip.exe");
    std::fs::copy(&wine.exe, &microsip).unwrap();
    let ini = dir.path().join("microsip.ini");
    let original: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(
            "[Settings]\r\nenableLog=0\r\ncmdCallEnd=\r\n\r\n[Calls]\r\n0=5552001;Alice \u{00c4};1;1764580000;12;\r\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    std::fs::write(&ini, &original).unwrap();
    let setup = |args: &[&str]| {
        let mut command = wine.command(&program);
        command
            .args(["setup", "microsip", "--ini", &windows_path(&ini)])
            .args(args);
        wine::finish(command)
    };

    let running = {
        let mut command = wine.command(&microsip);
        command.args(["run", "--trace", &windows_path(&dir.path().join("none.txt"))]);
        command.args(["--state-dir", &windows_path(&dir.path().join("state"))]);
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut running = Guard(running);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let refused = setup(&["--hooks"]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && message.contains("close MicroSIP"),
        "{message}"
    );
    assert_eq!(std::fs::read(&ini).unwrap(), original, "untouched while MicroSIP runs");
    let _ = running.0.kill();
    let _ = running.0.wait();

    let done = setup(&["--hooks"]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let units: Vec<u16> = std::fs::read(&ini).unwrap()[2..]
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    let text = String::from_utf16(&units).unwrap();
    let ring = format!(
        "cmdCallRing={}\r\n",
        windows_path(&dir.path().join("callhook-ring.exe"))
    );
    assert!(text.contains("enableLog=1\r\n") && text.contains(&ring), "{text}");
    assert!(text.contains("0=5552001;Alice \u{00c4};1;1764580000;12;\r\n"), "{text}");
    assert!(dir.path().join("callhook-end.exe").is_file());
    let undone = setup(&["--undo"]);
    assert!(undone.status.success(), "{}", String::from_utf8_lossy(&undone.stderr));
    assert_eq!(std::fs::read(&ini).unwrap(), original, "undo restores byte for byte");
}

/// Held by the tests that start a fake `microsip.exe`: `setup microsip` refuses while
/// any runs, and `run` watches the folder of one that runs.
static MICROSIP_RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kills the child when the test ends, also on a failed assertion.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `callhook.exe install` writes the per-user Run key (seen with `reg query`) that
/// starts the hidden launcher; `status` sees it; the launcher starts callhook with its
/// stderr in the log; `uninstall` removes the key.
#[test]
fn install_writes_the_run_key_and_uninstall_removes_it() {
    let Some(wine) = Wine::find("install_writes_the_run_key_and_uninstall_removes_it") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("callhook.yaml");
    std::fs::write(&config, "version: 1\nstate_dir: state\nsources:\n  - kind: hook\n").unwrap();
    let run_key = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";
    let reg_query = || {
        let mut command = wine.command(Path::new("reg"));
        command.args(["query", run_key, "/v", "callhook"]);
        wine::finish(command)
    };
    let said = wine.output(["install", "-c", &windows_path(&config)]);
    assert!(said.contains("callhookw.exe"), "{said}");
    let query = reg_query();
    let value = String::from_utf8_lossy(&query.stdout).into_owned();
    let launcher = windows_path(&wine.exe.with_file_name("callhookw.exe"));
    let log = windows_path(&dir.path().join("state/callhook.log"));
    let expected = format!("\"{launcher}\" --log \"{log}\" run -c \"{}\"", windows_path(&config));
    assert!(
        query.status.success() && value.contains(&expected),
        "reg query: {value}"
    );
    assert!(wine.output(["status"]).contains("installed: "));

    // what login would run: the launcher starts callhook.exe hidden, logging to the file
    let mut launch = wine.command(&wine.exe.with_file_name("callhookw.exe"));
    launch.args(["--log", &log, "run", "-c", &windows_path(&config)]);
    assert!(wine::finish(launch).status.success());
    let addr = dir.path().join("state/hook.addr");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !addr.is_file() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(addr.is_file(), "the launched daemon runs (it writes hook.addr)");
    assert!(wine.output(["status"]).contains("running: yes"));
    let said = wine.output(["hook", "ring", "5550199", "-c", &windows_path(&config)]);
    // Spooled only when the daemon answered too late (a loaded machine): the same state
    // dir either way.
    assert!(said.contains("delivered") || said.contains("spooled"), "{said}");
    assert!(dir.path().join("state/callhook.log").is_file(), "the log file is there");

    wine.output(["uninstall"]);
    assert!(!reg_query().status.success(), "the Run value is gone");
    assert!(wine.output(["status"]).contains("not installed"));
    // end the daemon the launcher started (only it names this test's config)
    let config_arg = windows_path(&config);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&config_arg)
            && let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>()
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

/// `callhook.exe run` with nothing given finds MicroSIP's log where the installer puts
/// it (`%LOCALAPPDATA%\MicroSIP` of the Wine prefix), says so, and follows what a
/// Windows writer appends (not what was there before); a running portable
/// `microsip.exe`'s folder then comes first.
#[test]
fn run_with_nothing_given_finds_microsip_in_localappdata_and_beside_a_running_microsip() {
    let Some(wine) = Wine::find("run_with_nothing_given_finds_microsip_in_localappdata_and_beside_a_running_microsip")
    else {
        return;
    };
    let _alone = MICROSIP_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let local = wine.windows_var("LOCALAPPDATA");
    let microsip = wine.unix_path(&format!(r"{local}\MicroSIP"));
    let _remove = RemoveOnDrop(microsip.clone());
    let _ = std::fs::remove_dir_all(&microsip);
    std::fs::create_dir_all(&microsip).unwrap();
    let trace = microsip.join("MicroSIP_log.txt");
    std::fs::write(&trace, common::fixture("basic")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |state: &str, more: &[&str], log: &str| {
        let mut command = wine.callhook(["run", "--state-dir", &windows_path(&dir.path().join(state))]);
        command.args(more).env("CALLHOOK_LOG", "info");
        wine.spawn_command(command, &dir.path().join(log))
    };
    let daemon = run("state", &[], "run.log");
    let watching = format!(r"watching {local}\MicroSIP\MicroSIP_log.txt (sip_trace)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(daemon.log().contains(&watching) && daemon.log().contains("reading from its end")) {
        assert!(std::time::Instant::now() < deadline, "{watching}?\n{}", daemon.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        daemon.log().contains("events as JSON lines on stdout"),
        "{}",
        daemon.log()
    );
    let burst = common::fixture("burst");
    let piece = dir.path().join("burst");
    std::fs::write(&piece, &burst).unwrap();
    wine.log_writer("append", &trace, Some(&piece));
    let expected = replay_keys(&burst);
    assert_eq!(
        common::keys(&daemon.take(expected.len(), 30)),
        expected,
        "only what was appended"
    );
    assert!(daemon.more(1000).is_empty(), "nothing more\n{}", daemon.log());
    drop(daemon);

    // A portable MicroSIP (callhook.exe under that name) runs from a folder holding its
    // ini and log: that folder comes before the installer's.
    let portable = dir.path().join("portable");
    std::fs::create_dir_all(&portable).unwrap();
    std::fs::copy(wine.tool("bcryptprimitives.dll"), portable.join("bcryptprimitives.dll")).unwrap();
    let exe = portable.join("microsip.exe");
    std::fs::copy(&wine.exe, &exe).unwrap();
    common::write_ini(&portable.join("microsip.ini"), &[] as &[&str]);
    std::fs::write(portable.join("MicroSIP_log.txt"), common::fixture("redirect")).unwrap();
    let mut running = wine.command(&exe);
    running.args(["run", "--trace", &windows_path(&dir.path().join("none.txt"))]);
    running.args(["--state-dir", &windows_path(&dir.path().join("microsip-state"))]);
    let running = Guard(
        running
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let daemon = run("state2", &["--start-at", "beginning"], "run2.log");
    let redirect = common::fixture("redirect");
    let expected = replay_keys(&redirect);
    assert_eq!(common::keys(&daemon.take(expected.len(), 30)), expected);
    let log = daemon.log();
    assert!(
        log.contains(&format!("MicroSIP found beside the running {}", windows_path(&exe))),
        "{log}"
    );
    drop(running);
}

/// The (call id, type) of each event a full Linux replay of `bytes` gives, sorted.
fn replay_keys(bytes: &[u8]) -> Vec<(String, String)> {
    let events: Vec<serde_json::Value> = common::replay(bytes)
        .0
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    common::keys(&events)
}

/// Removes a folder when the test ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
