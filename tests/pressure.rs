//! Under sustained pressure from a hostile peer, memory stays bounded and the daemon
//! keeps working: a receiver answering 500 with a 1 GB body, a 300 MB NDJSON line given
//! to `callhook test`, thousands of hook connections held open with a low file limit.
//! Real child processes; peak memory read from the kernel (`VmHWM`, `wait4` rusage).
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Trace, append, invite};

/// The memory bound the issue sets for these cases.
const RSS_LIMIT_KB: u64 = 50 * 1024;

/// A peak resident set size in KiB, from `/proc/PID/status`.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

fn ringing(call_id: &str) -> Vec<u8> {
    let mut trace = Trace::new();
    trace.sip(true, &invite(call_id, "sip:5550100@pbx", "sip:201@pbx", 1));
    trace.text.into_bytes()
}

/// A receiver that answers every request 500 with a body of `size` bytes, written until
/// the client stops reading; counts the body bytes the kernel took.
fn huge_error_receiver(size: u64) -> (u16, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (requests, written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (r, w) = (requests.clone(), written.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (r, w) = (r.clone(), w.clone());
            std::thread::spawn(move || answer_huge(stream, size, &r, &w));
        }
    });
    (port, requests, written)
}

fn answer_huge(stream: TcpStream, size: u64, requests: &AtomicU64, written: &AtomicU64) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if line.trim().is_empty() {
            break;
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let mut writer = stream;
    let head =
        format!("HTTP/1.1 500 Internal Server Error\r\nContent-Length: {size}\r\nContent-Type: text/plain\r\n\r\n");
    if writer.write_all(head.as_bytes()).is_err() {
        return;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0u64;
    while sent < size {
        match writer.write(&chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                sent += n as u64;
                written.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
}

fn write_config(dir: &Path, trace: &Path, extra_sources: &str, rules: &str) -> std::path::PathBuf {
    let config = dir.join("callhook.yaml");
    let text = format!(
        "version: 1\nstate_dir: state\nsources:\n  - kind: sip_trace\n    path: {}\n    start_at: beginning\n    poll_interval: 20ms\n    time_zone: UTC\n{extra_sources}rules:\n{rules}",
        trace.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn a_gigabyte_error_body_is_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("phone.log");
    std::fs::write(&trace, b"").unwrap();
    let (port, requests, written) = huge_error_receiver(1 << 30);
    let rules = format!("  - name: helpdesk\n    on: ringing\n    webhook:\n      url: http://127.0.0.1:{port}/hook\n");
    let config = write_config(dir.path(), &trace, "", &rules);
    let child = common::Child::run(
        Path::new(env!("CARGO_BIN_EXE_callhook")),
        &trace,
        dir.path(),
        Some(&config),
    );
    let pid = child.process.id();
    append(&trace, &ringing("big-body@pbx"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while requests.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(requests.load(Ordering::SeqCst) >= 1, "the receiver got no request");
    // Let the failed attempt finish, and the sender stall when nobody reads.
    std::thread::sleep(Duration::from_millis(1500));
    let peak = peak_rss_kb(pid);
    let taken = written.load(Ordering::SeqCst);
    let lines = child.kill();
    eprintln!(
        "1 GB error body: peak RSS {} KiB, {} KiB of the body taken by the kernel",
        peak,
        taken / 1024
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(peak > 0 && peak < RSS_LIMIT_KB, "peak RSS {peak} KiB");
    assert!(taken < 64 << 20, "{taken} bytes of the body were read");
}

/// Runs a program to its end and returns (exit success, stdout, stderr, peak RSS KiB)
/// from the kernel's own accounting of that child (`wait4`).
#[allow(clippy::zombie_processes, reason = "reaped by wait4, which also gives its rusage")]
fn run_measured(command: &mut Command) -> (bool, String, String, u64) {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let (mut stdout, mut stderr) = (child.stdout.unwrap(), child.stderr.unwrap());
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut out = String::new();
    let _ = stdout.read_to_string(&mut out);
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (success, out, errors.join().unwrap(), usage.ru_maxrss as u64)
}

#[test]
fn a_300_mb_ndjson_line_is_skipped_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("phone.log");
    std::fs::write(&trace, ringing("before@pbx")).unwrap();
    let config = write_config(
        dir.path(),
        &trace,
        "",
        "  - name: log\n    on: ringing\n    run:\n      argv: [\"true\", \"--\", \"{{ remote_number }}\"]\n",
    );
    // Two real events, a 300 MB line between them.
    let (events, _) = common::replay(&ringing("one@pbx"));
    let event_line = events[0].to_json();
    let input = dir.path().join("events.ndjson");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        writeln!(file, "{event_line}").unwrap();
        file.write_all(b"{\"call_id\": \"").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..300 {
            file.write_all(&chunk).unwrap();
        }
        file.write_all(b"\"}\n").unwrap();
        writeln!(file, "{}", event_line.replace("one@pbx", "two@pbx")).unwrap();
    }
    let (success, out, errors, peak) = run_measured(
        Command::new(env!("CARGO_BIN_EXE_callhook"))
            .args(["test", "-c"])
            .arg(&config)
            .arg(&input)
            .env("CALLHOOK_LOG", "warn"),
    );
    eprintln!("300 MB NDJSON line: peak RSS {peak} KiB");
    assert!(success, "{errors}");
    assert!(peak < RSS_LIMIT_KB, "peak RSS {peak} KiB");
    assert_eq!(
        out.matches("fires  log").count(),
        2,
        "both real events are evaluated: {out}"
    );
    assert!(
        errors.contains("events.ndjson:2:"),
        "the skipped line is named: {errors}"
    );
}

/// Raises this process's open-file limit (the test holds thousands of sockets).
fn raise_own_file_limit(to: u64) {
    // SAFETY: plain getrlimit/setrlimit on our own process.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(to.max(limit.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

#[test]
fn thousands_of_held_hook_connections_under_a_low_file_limit() {
    use std::os::unix::process::CommandExt;
    raise_own_file_limit(16_384);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("phone.log");
    std::fs::write(&trace, b"").unwrap();
    let config = write_config(
        dir.path(),
        &trace,
        "  - kind: hook\n    poll_interval: 50ms\n",
        "  []\n",
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_callhook"));
    command
        .args(["run", "--stdout", "-c"])
        .arg(&config)
        .env("CALLHOOK_LOG", "warn");
    // SAFETY: only async-signal-safe setrlimit between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let pid = daemon.id();
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let stdout = daemon.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let state = dir.path().join("state");
    let inbox = callhook::source::hook_inbox::Inbox::new(&state);
    let deadline = Instant::now() + Duration::from_secs(20);
    let address = loop {
        if let Some(address) = inbox.daemon_address() {
            break address;
        }
        assert!(Instant::now() < deadline, "the daemon never listened for hooks");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Hold as many connections as the kernel lets us open, up to 5,000.
    let mut held = Vec::new();
    let mut failures = 0;
    while held.len() < 5000 && failures < 50 {
        match TcpStream::connect_timeout(&address, Duration::from_millis(50)) {
            Ok(stream) => held.push(stream),
            Err(_) => failures += 1,
        }
    }
    let (ticks_before, started) = (cpu_ticks(pid), Instant::now());
    // Trace events keep flowing.
    for i in 0..20 {
        append(&trace, &ringing(&format!("flood-{i}@pbx")));
        std::thread::sleep(Duration::from_millis(100));
    }
    let ticks = cpu_ticks(pid) - ticks_before;
    let seconds = started.elapsed().as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = ticks as f64 / per_second / seconds * 100.0;
    // The next real hook is delivered or spooled.
    let said = common::hook(&state, "ring", "5550999");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines.lock().unwrap().len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = lines.lock().unwrap().clone();
    let _ = daemon.kill();
    let _ = daemon.wait();
    eprintln!(
        "{} hook connections held, daemon CPU {cpu:.1}% of a core over {seconds:.1} s",
        held.len()
    );
    assert!(held.len() > 1024, "only {} connections could be opened", held.len());
    assert!(said.contains("delivered") || said.contains("spooled"), "{said}");
    let flood: Vec<_> = seen.iter().filter(|l| l.contains("flood-")).collect();
    assert_eq!(flood.len(), 20, "trace events stopped flowing: {seen:?}");
    // A spinning accept loop takes a whole core; the bound is far from noise.
    assert!(cpu < 50.0, "daemon CPU {cpu:.1}% of a core while flooded");
}
