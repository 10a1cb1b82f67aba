//! Running the Windows build (`callhook.exe`) and the test's small Windows programs
//! under Wine, for `tests/windows.rs`.
//!
//! `scripts/test` installs Wine and MinGW, builds `callhook.exe`, the
//! `bcryptprimitives.dll` shim Wine 8 needs and the helper programs
//! (`argv_dump.exe`, `log_writer.exe`) into one folder, creates a private
//! `WINEPREFIX` under `target/`, and names the exe in `CALLHOOK_WINDOWS_EXE`. Without
//! that variable every Wine test says it was skipped and passes.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where the Windows programs are and how to start them.
pub struct Wine {
    /// The Wine loader (`CALLHOOK_WINE`, default `wine`).
    loader: PathBuf,
    /// `callhook.exe`, with the shim DLL and the helper programs beside it.
    pub exe: PathBuf,
}

impl Wine {
    /// The Windows build to test, or `None` (after printing why) when the test run has
    /// none.
    pub fn find(test: &str) -> Option<Wine> {
        let Some(exe) = std::env::var_os("CALLHOOK_WINDOWS_EXE").filter(|v| !v.is_empty()) else {
            eprintln!(
                "{test}: skipped: CALLHOOK_WINDOWS_EXE is not set (./scripts/test builds callhook.exe, installs Wine and sets it)"
            );
            return None;
        };
        let exe = PathBuf::from(exe);
        assert!(
            exe.is_file(),
            "CALLHOOK_WINDOWS_EXE={} is not a file; build it with ./scripts/test",
            exe.display()
        );
        let loader = std::env::var_os("CALLHOOK_WINE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("wine"));
        Some(Wine { loader, exe })
    }

    /// A helper program built beside `callhook.exe` (`argv_dump.exe`, `log_writer.exe`).
    pub fn tool(&self, name: &str) -> PathBuf {
        let path = self.exe.with_file_name(name);
        assert!(
            path.is_file(),
            "{} is missing; ./scripts/test builds it",
            path.display()
        );
        path
    }

    /// A command that runs the Windows `program` under Wine (quiet, UTC, the test's
    /// prefix from the environment).
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(&self.loader);
        command
            .arg(program)
            .env("WINEDEBUG", "-all")
            .env("TZ", "UTC")
            .env("CALLHOOK_LOG", "warn")
            .stdin(Stdio::null());
        command
    }

    /// `callhook.exe ARGS`.
    pub fn callhook<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = self.command(&self.exe);
        command.args(args);
        command
    }

    /// Runs `callhook.exe ARGS` to its end; panics unless it succeeds. Returns stdout.
    pub fn output<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let output = finish(self.callhook(args));
        assert!(
            output.status.success(),
            "callhook.exe failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("stdout is UTF-8")
    }

    /// Runs `log_writer.exe ARGS` (paths translated), asserting that it succeeds.
    pub fn log_writer(&self, op: &str, path: &Path, arg: Option<&Path>) {
        let output = self.try_log_writer(op, path, arg);
        assert!(
            output.status.success(),
            "log_writer {op} {} failed ({}): {}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Runs `log_writer.exe ARGS` (paths translated) and returns how it went.
    pub fn try_log_writer(&self, op: &str, path: &Path, arg: Option<&Path>) -> std::process::Output {
        let mut command = self.command(&self.tool("log_writer.exe"));
        command.arg(op).arg(windows_path(path));
        if let Some(arg) = arg {
            command.arg(windows_path(arg));
        }
        finish(command)
    }

    /// Starts `callhook.exe ARGS`, stdout collected line by line, stderr into `log`.
    pub fn spawn<I, S>(&self, args: I, log: &Path) -> Running
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.spawn_command(self.callhook(args), log)
    }

    /// Starts `command` (from [`Wine::callhook`] or [`Wine::command`]), stdout collected
    /// line by line, stderr into `log`.
    pub fn spawn_command(&self, mut command: Command, log: &Path) -> Running {
        let stderr = std::fs::File::create(log).unwrap();
        let mut process = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("wine starts");
        let stdout = process.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            process,
            lines,
            log: log.to_owned(),
        }
    }
}

impl Wine {
    /// The value of the Windows environment variable `name` in the prefix (Wine sets
    /// `LOCALAPPDATA`, `APPDATA` and the like from its own profile, whatever the Unix
    /// environment says).
    pub fn windows_var(&self, name: &str) -> String {
        let mut command = self.command(Path::new("cmd"));
        command.args(["/c", &format!("echo %{name}%")]);
        let output = finish(command);
        assert!(output.status.success(), "cmd /c echo %{name}%: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Where the Windows path `path` is on this machine (`winepath -u`).
    pub fn unix_path(&self, path: &str) -> PathBuf {
        let mut command = self.command(Path::new("winepath"));
        command.args(["-u", path]);
        let output = finish(command);
        assert!(output.status.success(), "winepath -u {path}: {output:?}");
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    }
}

/// A running `callhook.exe` (killed when dropped).
pub struct Running {
    process: std::process::Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Running {
    /// The next `n` lines of stdout as JSON events, waiting at most `seconds`.
    pub fn take(&self, n: usize, seconds: u64) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))),
                Err(_) => panic!(
                    "only {} of {n} events came within {seconds} s: {got:#?}\ncallhook.exe's log:\n{}",
                    got.len(),
                    self.log()
                ),
            }
        }
        got
    }

    /// Whatever lines come within `millis` (for "nothing more" checks).
    pub fn more(&self, millis: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_millis(millis);
        let mut got = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            got.push(line);
        }
        got
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process at once (the Windows process is the Wine loader's process, so
    /// this is a crash as `taskkill /F` or a power cut would make it); returns the
    /// stdout lines not taken yet.
    pub fn kill(mut self) -> Vec<String> {
        let _ = self.process.kill();
        let _ = self.process.wait();
        // the pipe closes once wineserver has cleaned up the dead process
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut rest = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push(line);
        }
        rest
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Runs `command` to its end with stdout and stderr in files, not pipes: a Wine process
/// may start wineserver or a service that inherits its descriptors and outlives it, so a
/// pipe would not see its end.
pub fn finish(mut command: Command) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let status = command
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .expect("wine starts");
    std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// `path` as the Windows programs see it: Wine maps the Unix root to drive `Z:`.
pub fn windows_path(path: &Path) -> String {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap().join(path)
    };
    format!("Z:{}", absolute.display()).replace('/', "\\")
}
