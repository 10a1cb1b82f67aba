//! Decorations (issue 19): PJSIP logs written through an app's own logger carry a
//! prefix on each line (Android logcat, iOS NSLog, CocoaLumberjack, syslog/journald,
//! spdlog). Every fixture, rewritten with each prefix the way such loggers write it,
//! must give exactly the fixture's expected events, and `replay --format auto` must read
//! it (or refuse, loudly, what it cannot read).

mod common;

/// How a logger decorates a PJSIP log.
struct Decor {
    name: &'static str,
    /// The prefix of line `n` logged at `time` (`HH:MM:SS.mmm`).
    prefix: fn(time: &str, n: usize) -> String,
    /// PJSIP's own time column is switched off: the prefix's time is the line's.
    no_pjsip_time: bool,
    /// How message text (lines without a PJSIP time) is written.
    continuation: Continuation,
}

#[derive(Clone, Copy, PartialEq)]
enum Continuation {
    /// With the same prefix (logcat splits messages into lines).
    Prefixed,
    /// As it is (NSLog, Lumberjack write the message whole).
    Bare,
    /// Indented by the prefix's width (Android Studio).
    Indented,
}

const LEVELS: [&str; 3] = ["I", "D", "W"];

fn decors() -> Vec<Decor> {
    use Continuation::*;
    vec![
        Decor {
            name: "logcat",
            prefix: |t, n| {
                format!(
                    "01-24 {t} 7619-{}/org.pjsip.app {}/PJSIP: ",
                    7941 + n % 3,
                    LEVELS[n % 3]
                )
            },
            no_pjsip_time: false,
            continuation: Prefixed,
        },
        Decor {
            name: "logcat-threadtime",
            prefix: |t, n| format!("01-24 {t}  7619 {:5} {} PJSIP   : ", 7941 + n % 5 * 1000, LEVELS[n % 3]),
            no_pjsip_time: false,
            continuation: Prefixed,
        },
        Decor {
            name: "android-studio",
            prefix: |t, n| {
                format!(
                    "2023-09-20 {t} 20476-20521 System.out              com.example.app            {}  ",
                    LEVELS[n % 3]
                )
            },
            no_pjsip_time: false,
            continuation: Indented,
        },
        Decor {
            name: "nslog",
            prefix: |t, n| format!("2024-01-24 {t} App[123:{}] ", 4567 + n % 7),
            no_pjsip_time: false,
            continuation: Bare,
        },
        Decor {
            name: "nslog-prefixed",
            prefix: |t, n| format!("2024-01-24 {t}+0100 App[123:{:x}] ", 0x4567 + n % 7),
            no_pjsip_time: false,
            continuation: Prefixed,
        },
        Decor {
            name: "lumberjack",
            prefix: |t, n| {
                let level = ["\u{1F49A} DEBUG  ", "\u{1F499} VERBOSE", "\u{2764}\u{FE0F} ERROR  "][n % 3];
                format!("{level} {t} [VSLEndpoint void logCallBack(int, const char *, int):582]")
            },
            no_pjsip_time: true,
            continuation: Bare,
        },
        Decor {
            name: "syslog",
            prefix: |t, n| format!("Jan 24 {} host callapp[{}]: ", &t[..8], 123 + n % 2),
            no_pjsip_time: false,
            continuation: Prefixed,
        },
        Decor {
            name: "spdlog",
            prefix: |t, n| format!("[{t}][t:{}][p:1][pjsip][{}] ", n % 12, ["debug", "info"][n % 2]),
            no_pjsip_time: false,
            continuation: Prefixed,
        },
        Decor {
            name: "spdlog-no-pjsip-time",
            prefix: |t, n| format!("[{t}][t:{}][p:1][pjsip][{}]", n % 12, ["debug", "info"][n % 2]),
            no_pjsip_time: true,
            continuation: Prefixed,
        },
    ]
}

/// `[YYYY-MM-DD ]HH:MM:SS.mmm` at the start of `line`: (time, length taken).
fn pjsip_time(line: &str) -> Option<(&str, usize)> {
    let skip = if line.as_bytes().get(4) == Some(&b'-') { 11 } else { 0 };
    let time = line.get(skip..skip + 12)?;
    let b = time.as_bytes();
    let ok = b.iter().enumerate().all(|(i, c)| match i {
        2 | 5 => *c == b':',
        8 => *c == b'.',
        _ => c.is_ascii_digit(),
    });
    ok.then_some((time, skip + 12))
}

/// `log` as `decor` writes it.
fn decorate(log: &[u8], decor: &Decor) -> Vec<u8> {
    let text = String::from_utf8_lossy(log);
    let mut out = String::with_capacity(text.len() * 2);
    let mut time = "00:00:00.000".to_owned();
    let mut width = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        match pjsip_time(line) {
            Some((t, taken)) => {
                time = t.to_owned();
                let prefix = (decor.prefix)(&time, n);
                width = prefix.len();
                out.push_str(&prefix);
                out.push_str(if decor.no_pjsip_time { &line[taken..] } else { line });
            }
            None => match decor.continuation {
                Continuation::Prefixed => {
                    out.push_str(&(decor.prefix)(&time, n));
                    if decor.no_pjsip_time {
                        out.push(' ');
                    }
                    out.push_str(line);
                }
                Continuation::Bare => out.push_str(line),
                Continuation::Indented => {
                    out.push_str(&" ".repeat(width));
                    out.push_str(line);
                }
            },
        }
    }
    out.into_bytes()
}

#[test]
fn every_fixture_read_behind_every_decoration() {
    let mut failures = Vec::new();
    let cases = common::pjsip_fixtures();
    for decor in decors() {
        for dir in &cases {
            let log = decorate(&std::fs::read(dir.join("phone.log")).unwrap(), &decor);
            for chunk in [1 << 20, 777] {
                let (events, errors) = common::replay_chunked(&log, chunk, |_| {});
                let result = if errors.is_empty() {
                    common::matches_expected(dir, &events)
                } else {
                    Err(format!("parse errors: {errors:?}"))
                };
                if let Err(problem) = result {
                    let case = dir.file_name().unwrap().to_string_lossy();
                    failures.push(format!("{} / {case} (chunk {chunk}):\n  {problem}", decor.name));
                    break;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn replay_auto(path: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["replay", "--quiet", "--date", "2026-11-23"])
        .arg(path)
        .output()
        .unwrap()
}

/// `--format auto` reads every decoration, and refuses, with the lines it tried, a file
/// that shows no PJSIP line (before: an NSLog file was taken and gave nothing, exit 0).
#[test]
fn format_auto_reads_decorated_logs_and_refuses_loudly_what_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pjsip/basic");
    let expected = std::fs::read_to_string(case.join("expected.ndjson"))
        .unwrap()
        .lines()
        .count();
    for decor in decors() {
        let path = dir.path().join(format!("{}.log", decor.name));
        std::fs::write(&path, decorate(&std::fs::read(case.join("phone.log")).unwrap(), &decor)).unwrap();
        let out = replay_auto(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", decor.name);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            expected,
            "{}: {stderr}",
            decor.name
        );
    }
    let nslog = dir.path().join("app.log");
    std::fs::write(
        &nslog,
        "2024-01-24 16:45:14.699 App[123:4567] Started\n2024-01-24 16:45:14.701 App[123:4567] 12:00:00 x\n",
    )
    .unwrap();
    let out = replay_auto(&nslog);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("app.log: not a PJSIP log"), "{stderr}");
    assert!(
        stderr.contains("\"2024-01-24 16:45:14.699 App[123:4567] Started\""),
        "{stderr}"
    );
}
