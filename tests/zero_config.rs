//! `callhook run` with nothing given, as a real child process in a made-up home: it
//! finds MicroSIP's `MicroSIP_log.txt` and `microsip.ini` where MicroSIP keeps them
//! (`%LOCALAPPDATA%\MicroSIP`, `%APPDATA%\MicroSIP`), follows both as they are written
//! and reports each call once; a configuration in the user's folder wins over them (its
//! paths expanded); `--microsip-dir` names a portable MicroSIP's folder; with nothing
//! to find it says where it looked and what to do.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{Trace, append, invite, request, response, write_ini};

/// `callhook ARGS` with only `vars` (and PATH, TZ=UTC) in its environment.
fn callhook(args: &[&str], vars: &[(&str, &Path)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callhook"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TZ", "UTC")
        .env("CALLHOOK_LOG", "info")
        .stdin(Stdio::null());
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

/// A running `callhook run`: stdout lines as they come, stderr kept.
struct Running {
    process: std::process::Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut process = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("callhook starts");
        let (tx, lines) = mpsc::channel();
        let stdout = process.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = process.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Running { process, lines, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr holds every one of `needles`.
    fn wait_for(&self, needles: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !needles.iter().all(|n| self.stderr().contains(n)) {
            assert!(
                Instant::now() < deadline,
                "waited for {needles:?} in:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next `n` events.
    fn take(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        (0..n)
            .map(|i| {
                let left = deadline.saturating_duration_since(Instant::now());
                let line = self
                    .lines
                    .recv_timeout(left)
                    .unwrap_or_else(|_| panic!("event {} of {n} did not come; stderr:\n{}", i + 1, self.stderr()));
                serde_json::from_str(&line).unwrap()
            })
            .collect()
    }

    /// Asserts that nothing more comes within `millis`.
    fn quiet_for(&self, millis: u64) {
        if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(millis)) {
            panic!("unexpected event: {line}");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A made-up user: `home`, and MicroSIP's installer folders under `appdata`.
struct User {
    _dir: tempfile::TempDir,
    home: PathBuf,
    local: PathBuf,
    roaming: PathBuf,
}

impl User {
    fn new() -> User {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let local = dir.path().join("AppData/Local");
        let roaming = dir.path().join("AppData/Roaming");
        for folder in [&home, &local, &roaming] {
            std::fs::create_dir_all(folder).unwrap();
        }
        User {
            _dir: dir,
            home,
            local,
            roaming,
        }
    }

    fn vars(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("HOME", &self.home),
            ("LOCALAPPDATA", &self.local),
            ("APPDATA", &self.roaming),
        ]
    }

    /// MicroSIP as its installer lays it out: the log in Local, the ini in Roaming.
    fn microsip(&self) -> (PathBuf, PathBuf) {
        let trace = self.local.join("MicroSIP/MicroSIP_log.txt");
        let ini = self.roaming.join("MicroSIP/microsip.ini");
        std::fs::create_dir_all(trace.parent().unwrap()).unwrap();
        std::fs::create_dir_all(ini.parent().unwrap()).unwrap();
        (trace, ini)
    }
}

fn now_ms_of_day() -> u64 {
    (jiff::Timestamp::now().as_millisecond() as u64) % 86_400_000
}

const PHONE: &str = "<sip:101@pbx>";

#[test]
fn run_with_nothing_given_finds_microsip_and_reports_each_call_once() {
    let user = User::new();
    let (trace, ini) = user.microsip();
    // Yesterday's calls are in both files: not reported again (start at the end).
    append(&trace, common::fixture("basic").as_slice());
    let old = "5559999;Old;1;1764580000;30;";
    write_ini(&ini, &[old]);

    let daemon = Running::start(callhook(&["run"], &user.vars()));
    daemon.wait_for(&[
        &format!("watching {} (sip_trace)", trace.display()),
        &format!("watching {} (history), correlated with the trace", ini.display()),
        "events as JSON lines on stdout",
        "new file; reading from its end",
        "new call history",
    ]);
    assert!(
        daemon.stderr().contains(&format!(
            "state in {}",
            user.home.join(".local/state/callhook").display()
        )),
        "{}",
        daemon.stderr()
    );

    // One inbound call, written to both files as MicroSIP does at each step.
    let from = "\"Alice\" <sip:5552001@pbx>";
    let id = "zero-config-1@pbx";
    let start = jiff::Timestamp::now().as_second();
    let entry = |kind: u8, duration: u32| {
        let call = format!("5552001;Alice;{kind};{start};{duration};");
        write_ini(&ini, &[old, &call]);
    };
    let mut step = Trace::crlf();
    step.at_ms(now_ms_of_day()).sip(true, &invite(id, from, PHONE, 1));
    append(&trace, step.text.as_bytes());
    entry(2, 0);
    let ringing = daemon.take(1);
    let mut step = Trace::crlf();
    step.at_ms(now_ms_of_day())
        .sip(false, &response(200, id, from, PHONE, 1, "INVITE"));
    append(&trace, step.text.as_bytes());
    entry(1, 0);
    let answered = daemon.take(1);
    let mut step = Trace::crlf();
    step.at_ms(now_ms_of_day())
        .sip(true, &request("BYE", id, from, PHONE, 2, ""));
    append(&trace, step.text.as_bytes());
    entry(1, 12);
    let ended = daemon.take(1);
    for (event, kind) in [
        (&ringing[0], "ringing"),
        (&answered[0], "answered"),
        (&ended[0], "ended"),
    ] {
        assert_eq!(event["type"], kind, "{event}");
        assert_eq!(event["call_id"], id, "the trace's data: {event}");
        assert_eq!(event["source"], "sip_trace", "{event}");
        assert_eq!(event["remote_number"], "5552001");
    }
    assert_eq!(ended[0]["outcome"], "completed");
    // The ini's reports of the same call are duplicates: nothing more.
    daemon.quiet_for(1500);

    // A call only the ini knows (the log lost it): still reported, from the history.
    let missed = format!("5553003;Bob;2;{};0;", jiff::Timestamp::now().as_second());
    write_ini(&ini, &[old, &format!("5552001;Alice;1;{start};12;"), &missed]);
    let events = daemon.take(1);
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["source"].as_str()),
        (Some("ringing"), Some("history"))
    );
    assert_eq!(events[0]["remote_number"], "5553003");
    daemon.quiet_for(500);
}

#[test]
fn a_configuration_in_the_user_folder_wins_and_its_paths_are_expanded() {
    let user = User::new();
    user.microsip();
    let config_home = user.home.join("cfg");
    let config = config_home.join("callhook/callhook.yaml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        "version: 1\nstate_dir: '${env:CALLHOOK_TEST_STATE}'\nsources:\n  - kind: sip_trace\n    path: '~/phone.log'\n    start_at: beginning\n",
    )
    .unwrap();
    std::fs::write(user.home.join("phone.log"), common::fixture("basic")).unwrap();
    let state = user.home.join("my-state");
    let mut vars = user.vars();
    vars.push(("XDG_CONFIG_HOME", &config_home));
    vars.push(("CALLHOOK_TEST_STATE", &state));

    let daemon = Running::start(callhook(&["run", "--stdout"], &vars));
    let events = daemon.take(10);
    assert_eq!(events[0]["type"], "ringing");
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(&format!(
            "configuration {} (the user's configuration folder)",
            config.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("MicroSIP found"), "{stderr}");
    assert!(state.join("callhook.db").is_file(), "state_dir from ${{env:…}}");
    drop(daemon);

    // CALLHOOK_CONFIG comes first; a variable it needs but lacks is named.
    let other = user.home.join("other.yaml");
    std::fs::write(
        &other,
        "version: 1\nsources:\n  - kind: history\n    path: '%NO_SUCH_FOLDER%/microsip.ini'\n",
    )
    .unwrap();
    vars.push(("CALLHOOK_CONFIG", &other));
    let out = callhook(&["run"], &vars).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr
            .contains("sources[0].path: %NO_SUCH_FOLDER%/microsip.ini: environment variable NO_SUCH_FOLDER is not set"),
        "{stderr}"
    );
    assert!(stderr.contains(&other.display().to_string()), "{stderr}");
}

#[test]
fn microsip_dir_names_a_portable_microsip() {
    let user = User::new();
    let portable = user.home.join("MicroSIP-portable");
    std::fs::create_dir_all(&portable).unwrap();
    std::fs::write(portable.join("MicroSIP_log.txt"), common::fixture("basic")).unwrap();
    write_ini(&portable.join("microsip.ini"), &[] as &[&str]);
    let dir = portable.to_str().unwrap();
    let daemon = Running::start(callhook(
        &["run", "--microsip-dir", dir, "--start-at", "beginning"],
        &user.vars(),
    ));
    assert_eq!(daemon.take(10).len(), 10);
    assert!(daemon.stderr().contains("--microsip-dir"), "{}", daemon.stderr());
    daemon.quiet_for(500);
}

#[test]
fn with_nothing_to_find_it_says_where_it_looked_and_what_to_do() {
    let user = User::new();
    let out = callhook(&["run"], &user.vars()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "callhook: no configuration and no MicroSIP files found".to_owned(),
        user.home.join(".config/callhook/callhook.yaml").display().to_string(),
        user.local.join("MicroSIP").display().to_string(),
        user.roaming.join("MicroSIP").display().to_string(),
        user.home.join(".wine/drive_c/users").display().to_string(),
        "callhook run --trace".to_owned(),
        "callhook run -c FILE".to_owned(),
        "--microsip-dir DIR".to_owned(),
        "callhook setup microsip".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "{needle} in {stderr}");
    }
    assert!(out.stdout.is_empty());

    let missing = user.home.join("nope");
    let out = callhook(&["run", "--microsip-dir", missing.to_str().unwrap()], &user.vars())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "no MicroSIP_log.txt or microsip.ini in --microsip-dir {}",
            missing.display()
        )),
        "{stderr}"
    );
}
