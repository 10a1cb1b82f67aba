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

/// A receiver on 127.0.0.1 for the secrets test: records each request (path, headers,
/// body); a path's first request is answered 500 and a path under `/reject` always 400,
/// each with the request echoed in the body, so an error recorded or logged would show
/// the secrets if callhook did not hide them.
struct Echo {
    url: String,
    requests: Heard,
}

/// A request heard: path (with query), headers (names lowercase), body.
type Request = (String, Vec<(String, String)>, String);
type Heard = std::sync::Arc<std::sync::Mutex<Vec<Request>>>;

impl Echo {
    fn start() -> Echo {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests: Heard = Default::default();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = seen.clone();
                std::thread::spawn(move || echo(stream, seen));
            }
        });
        Echo { url, requests }
    }

    fn wait_for(&self, n: usize) -> Vec<Request> {
        wait_until("the webhooks", || self.requests.lock().unwrap().len() >= n);
        self.requests.lock().unwrap().clone()
    }
}

#[allow(clippy::type_complexity)]
fn echo(
    stream: std::net::TcpStream,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<(String, String)>, String)>>>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        let path = first.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            match line.trim_end().split_once(':') {
                Some((k, v)) => headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned())),
                None => break,
            }
        }
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let body = String::from_utf8_lossy(&body).into_owned();
        let auth = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut seen = seen.lock().unwrap();
        let first_time = !seen.iter().any(|(p, ..)| *p == path);
        seen.push((path.clone(), headers, body.clone()));
        drop(seen);
        let (status, answer) = if path.starts_with("/reject") {
            (400, format!("echo {path} | {auth} | {body}"))
        } else if first_time {
            (500, format!("echo {path} | {auth} | {body}"))
        } else {
            (200, "ok".to_owned())
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// The forms a secret can take on output: as is, percent-encoded (either hex case),
/// form-encoded, JSON-escaped (and with `\u` escapes).
fn forms(secret: &str) -> Vec<String> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let percent = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).unwrap();
    let json = json[1..json.len() - 1].to_owned();
    let json_ascii: String = json
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect();
    let mut forms = vec![
        secret.to_owned(),
        percent.clone(),
        percent.to_lowercase(),
        form,
        json,
        json_ascii,
    ];
    if let Some(key) = secret.strip_prefix("whsec_") {
        forms.push(key.to_owned());
    }
    forms
}

/// Every form of every secret found in `text`.
fn leaks(what: &str, text: &[u8], secrets: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    secrets
        .iter()
        .flat_map(|s| forms(s))
        .filter(|form| text.contains(form.as_str()))
        .map(|form| format!("{what}: {form:?}"))
        .collect()
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

const QUERY_SECRET: &str = "q-s3cret with space+plus&amp=\"quote\"";
const HEADER_SECRET: &str = "h-s3cret \"quoted\" +&";
const FILE_SECRET: &str = "f-s3cret \"q\" \\back \u{fc}ber +&";
const NASTY_SECRET: &str = "n-s3cret 'single' \"double\" +&%/=?#";
const PATH_SECRET: &str = "p-s3cret/seg";
const LITERAL_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// issue 18, no secrets at rest: after a real run with every kind of secret, no file
/// under the state directory, no log line and no printout of `test` or `outbox` holds
/// any secret in any encoding, and the receiver got every one right (so they were put
/// in when sent).
#[test]
fn no_secret_at_rest_in_state_logs_or_printouts_and_the_receiver_gets_them_all() {
    use base64::Engine;
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"acceptance-signing-key-0123456789")
    );
    let env = [
        ("CALLHOOK_ACC_QUERY", QUERY_SECRET),
        ("CALLHOOK_ACC_HEADER", HEADER_SECRET),
        ("CALLHOOK_ACC_NASTY", NASTY_SECRET),
        ("CALLHOOK_ACC_PATH", PATH_SECRET),
        ("CALLHOOK_ACC_WHSEC", whsec.as_str()),
    ];
    let secrets = [
        QUERY_SECRET,
        HEADER_SECRET,
        FILE_SECRET,
        NASTY_SECRET,
        PATH_SECRET,
        LITERAL_WHSEC,
        whsec.as_str(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let receiver = Echo::start();
    std::fs::write(dir.path().join("phone.log"), b"").unwrap();
    std::fs::write(dir.path().join("body.secret"), format!("{FILE_SECRET}\n")).unwrap();
    let url = &receiver.url;
    let retry = "retry: { first: 100ms, factor: 1 }";
    let path = dir.path().join("callhook.yaml");
    std::fs::write(
        &path,
        format!(
            r#"version: 1
state_dir: state
sources:
  - {{ kind: sip_trace, path: phone.log, start_at: beginning, poll_interval: 20ms, time_zone: UTC }}
rules:
  - name: every-secret
    webhook:
      url: "{url}/hook?token=${{env:CALLHOOK_ACC_QUERY}}&n={{{{ remote_number }}}}"
      headers: {{ Authorization: "Bearer ${{env:CALLHOOK_ACC_HEADER}}" }}
      json: {{ key: "${{file:body.secret}}", number: "{{{{ remote_number }}}}" }}
      secret: "${{env:CALLHOOK_ACC_WHSEC}}"
      {retry}
  - name: form-secret
    webhook:
      url: "{url}/form"
      form: {{ key: "${{env:CALLHOOK_ACC_NASTY}}", number: "{{{{ remote_number }}}}" }}
      secret: "{LITERAL_WHSEC}"
      {retry}
  - name: text-secret
    webhook:
      url: "{url}/text/${{env:CALLHOOK_ACC_PATH}}"
      text: "key ${{env:CALLHOOK_ACC_NASTY}} for {{{{ remote_number }}}}"
      {retry}
  - name: rejected
    webhook:
      url: "{url}/reject?token=${{env:CALLHOOK_ACC_QUERY}}"
      headers: {{ Authorization: "Bearer ${{env:CALLHOOK_ACC_HEADER}}" }}
      json: {{ key: "${{file:body.secret}}" }}
"#
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut daemon = callhook()
        .args(["run", "-c"])
        .arg(&path)
        .envs(env)
        .env("CALLHOOK_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut trace = Trace::new();
    trace.at("10:00:00").sip(
        true,
        &invite("acc-1@pbx", "\"Secret Caller\" <sip:5550100@pbx>", "<sip:101@pbx>", 1),
    );
    std::thread::sleep(Duration::from_millis(300));
    append(&dir.path().join("phone.log"), trace.text.as_bytes());
    // Three rules answered 500 then 200, one answered 400: seven requests.
    let got = receiver.wait_for(7);
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    // The receiver got the secrets themselves, put in where the rules say.
    let last = |prefix: &str| {
        got.iter()
            .rev()
            .find(|(p, ..)| p.starts_with(prefix))
            .unwrap_or_else(|| panic!("nothing to {prefix}: {got:?}"))
            .clone()
    };
    let header = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (hook_path, hook_headers, hook_body) = last("/hook");
    let query: std::collections::HashMap<String, String> = url::Url::parse(&format!("{url}{hook_path}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(query["token"], QUERY_SECRET);
    assert_eq!(query["n"], "5550100");
    assert_eq!(
        header(&hook_headers, "authorization"),
        format!("Bearer {HEADER_SECRET}")
    );
    let body: serde_json::Value = serde_json::from_str(&hook_body).unwrap();
    assert_eq!(body["key"], FILE_SECRET);
    let signed = |headers: &[(String, String)], body: &str, secret: &str| {
        let id = header(headers, "webhook-id");
        let timestamp: i64 = header(headers, "webhook-timestamp").parse().unwrap();
        callhook::dispatch::signing::sign(secret, &id, timestamp, body.as_bytes()).unwrap()
            == header(headers, "webhook-signature")
    };
    assert!(
        signed(&hook_headers, &hook_body, &whsec),
        "signed with the key from the environment"
    );
    let (_, form_headers, form_body) = last("/form");
    let fields: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(form_body.as_bytes()).into_owned().collect();
    assert_eq!(fields["key"], NASTY_SECRET);
    assert!(
        signed(&form_headers, &form_body, LITERAL_WHSEC),
        "signed with the literal key"
    );
    let (text_path, _, text_body) = last("/text");
    assert_eq!(text_path, format!("/text/{PATH_SECRET}"));
    assert_eq!(text_body, format!("key {NASTY_SECRET} for 5550100"));

    // Nothing at rest: every file under the state directory, and the log.
    let mut found = Vec::new();
    let mut files = files_under(&state);
    files.push(dir.path().join("daemon.log"));
    for file in &files {
        found.extend(leaks(
            &file.display().to_string(),
            &std::fs::read(file).unwrap(),
            &secrets,
        ));
    }
    assert!(
        files.iter().any(|f| f.ends_with("callhook.db-wal")),
        "the WAL was looked at: {files:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("HTTP 500: echo"), "the failures were logged: {log}");
    assert!(log.contains("Bearer ***"), "with the secrets hidden: {log}");

    // Nor in what `test` and `outbox` print.
    let events = dir.path().join("events.ndjson");
    std::fs::write(
        &events,
        r#"{"v":1,"id":"e1","type":"ringing","at":"2026-11-23T10:00:00.000+00:00","call_id":"c1","direction":"inbound","local_number":"101","remote_number":"5550100","remote_name":"Alice","source":"sip_trace","source_path":"x"}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = callhook().args(args).envs(env).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        [out.stdout, out.stderr].concat()
    };
    let config = path.to_str().unwrap();
    let printed = run(&["test", "-c", config, events.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&printed).contains("${env:CALLHOOK_ACC_QUERY}"),
        "{}",
        String::from_utf8_lossy(&printed)
    );
    found.extend(leaks("callhook test", &printed, &secrets));
    let dead = run(&["outbox", "-c", config, "list"]);
    let listed = String::from_utf8_lossy(&dead);
    assert!(listed.contains("HTTP 400: echo") && listed.contains("***"), "{listed}");
    found.extend(leaks("outbox list", &dead, &secrets));
    let state_arg = state.to_str().unwrap();
    found.extend(leaks(
        "outbox list --state-dir",
        &run(&["outbox", "--state-dir", state_arg, "list", "--status", "all"]),
        &secrets,
    ));
    for id in 1..=4 {
        let shown = run(&["outbox", "--state-dir", state_arg, "show", &id.to_string()]);
        assert!(String::from_utf8_lossy(&shown).contains(&format!("job {id} ")));
        found.extend(leaks(&format!("outbox show {id}"), &shown, &secrets));
    }
    assert!(found.is_empty(), "secrets found:\n{}", found.join("\n"));
}

/// An HTTPS receiver on 127.0.0.1 whose certificate a private CA made here signed;
/// answers 200 to every request and counts them. The CA's PEM is in `ca_pem`.
struct TlsReceiver {
    url: String,
    ca_pem: String,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The protocol each connection agreed through ALPN (none: not offered).
    agreed: std::sync::Arc<std::sync::Mutex<Vec<Option<Vec<u8>>>>>,
}

impl TlsReceiver {
    fn start() -> TlsReceiver {
        TlsReceiver::offering(&[])
    }

    /// A receiver whose ALPN offers `protocols`; it speaks HTTP/1.1 only, so a
    /// connection that agrees on h2 is closed once the handshake is done.
    fn offering(protocols: &[&[u8]]) -> TlsReceiver {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "callhook test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap();
        let mut config = config;
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        let config = std::sync::Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let agreed: std::sync::Arc<std::sync::Mutex<Vec<Option<Vec<u8>>>>> = Default::default();
        let (counter, agreements) = (count.clone(), agreed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (config, counter, agreements) = (config.clone(), counter.clone(), agreements.clone());
                std::thread::spawn(move || {
                    let mut connection = rustls::ServerConnection::new(config).unwrap();
                    // The handshake fails on a client that does not trust the CA.
                    if connection.complete_io(&mut stream).is_err() {
                        return;
                    }
                    let protocol = connection.alpn_protocol().map(<[u8]>::to_vec);
                    agreements.lock().unwrap().push(protocol.clone());
                    if protocol.as_deref() != Some(b"h2") {
                        serve_tls(rustls::StreamOwned::new(connection, stream), &counter);
                    }
                });
            }
        });
        TlsReceiver {
            url,
            ca_pem: ca.pem(),
            count,
            agreed,
        }
    }

    fn received(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Requests on one TLS connection, each answered 200, until the peer closes (or the
/// handshake fails: an unknown issuer).
fn serve_tls(
    stream: rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    count: &std::sync::atomic::AtomicUsize,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            match header.trim_end().split_once(':') {
                Some((k, v)) if k.eq_ignore_ascii_case("content-length") => length = v.trim().parse().unwrap_or(0),
                Some(_) => {}
                None => break,
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let stream = reader.get_mut();
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
            || stream.flush().is_err()
        {
            return;
        }
    }
}

/// A job's webhook request: an empty JSON object POSTed to `base`'s `/x`, 5 s to answer.
fn post_to(base: &str) -> callhook::rules::action::WebhookRequest {
    serde_json::from_value(serde_json::json!({
        "method": "POST", "url": format!("{base}/x"), "headers": [],
        "content_type": "application/json", "body": "{}", "timeout_ms": 5000,
    }))
    .unwrap()
}

/// The client offers h2 through ALPN, and falls back to HTTP/1.1 where the receiver
/// offers only that.
#[test]
fn h2_is_offered_through_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |receiver: &TlsReceiver| {
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &receiver.ca_pem).unwrap();
        let request = post_to(&receiver.url);
        let client = callhook::dispatch::webhook::client_with(Some(&ca)).unwrap();
        runtime.block_on(callhook::dispatch::webhook::send(
            &client,
            &request,
            "k",
            &Default::default(),
        ))
    };
    let both = TlsReceiver::offering(&[b"h2", b"http/1.1"]);
    let _ = send(&both); // this receiver cannot go on in h2
    assert_eq!(*both.agreed.lock().unwrap(), vec![Some(b"h2".to_vec())]);
    let http1 = TlsReceiver::offering(&[b"http/1.1"]);
    let delivery = send(&http1);
    assert!(
        matches!(delivery, callhook::dispatch::Delivery::Done(_)),
        "{delivery:?}"
    );
    assert_eq!(*http1.agreed.lock().unwrap(), vec![Some(b"http/1.1".to_vec())]);
    assert_eq!(http1.received(), 1);
}

/// issue 18: a private CA is trusted through a webhook's `ca_file` (and only then).
#[test]
fn a_private_ca_is_trusted_through_ca_file() {
    let receiver = TlsReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &receiver.ca_pem).unwrap();
    let request = post_to(&receiver.url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |ca_file: Option<&Path>| {
        let client = callhook::dispatch::webhook::client_with(ca_file).unwrap();
        runtime.block_on(callhook::dispatch::webhook::send(
            &client,
            &request,
            "k",
            &Default::default(),
        ))
    };
    match send(None) {
        callhook::dispatch::Delivery::Retry { reason, .. } => {
            assert!(reason.contains("UnknownIssuer"), "{reason}")
        }
        other => panic!("a private CA was trusted without ca_file: {other:?}"),
    }
    assert_eq!(receiver.received(), 0);
    assert!(matches!(send(Some(&ca)), callhook::dispatch::Delivery::Done(_)));
    assert_eq!(receiver.received(), 1);
    // A file with no certificate is a config error.
    std::fs::write(dir.path().join("empty.pem"), "nothing\n").unwrap();
    let mut config = config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "rules:\n  - name: tls\n    webhook: {{ url: \"{}/x\", ca_file: empty.pem }}\n",
        receiver.url
    ));
    config.set_file_name("bad.yaml");
    std::fs::write(&config, text).unwrap();
    let out = callhook().args(["check", "-c"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("ca_file") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}

/// issue 18: the daemon honours a webhook's `ca_file`, and `SSL_CERT_FILE` for the
/// system store; without either a private CA's receiver fails with UnknownIssuer.
#[test]
fn the_daemon_trusts_ca_file_and_ssl_cert_file() {
    let receiver = TlsReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &receiver.ca_pem).unwrap();
    std::fs::write(dir.path().join("phone.log"), b"").unwrap();
    let mut trace = Trace::new();
    trace
        .at("10:00:00")
        .sip(true, &invite("tls-1@pbx", "<sip:5550100@pbx>", "<sip:101@pbx>", 1));
    append(&dir.path().join("phone.log"), trace.text.as_bytes());
    let url = &receiver.url;
    let run = |state: &str, ssl_cert_file: Option<&Path>, until: &dyn Fn(&Path) -> bool| {
        let path = dir.path().join(format!("{state}.yaml"));
        std::fs::write(
            &path,
            format!(
                r#"version: 1
state_dir: {state}
sources:
  - {{ kind: sip_trace, path: phone.log, start_at: beginning, poll_interval: 20ms, time_zone: UTC }}
rules:
  - name: with-ca-file
    webhook: {{ url: "{url}/a", ca_file: ca.pem, retry: {{ first: 30s }} }}
  - name: system-store
    webhook: {{ url: "{url}/b", retry: {{ first: 30s }} }}
"#
            ),
        )
        .unwrap();
        let mut command = callhook();
        command
            .args(["run", "-c"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
        if let Some(file) = ssl_cert_file {
            command.env("SSL_CERT_FILE", file);
        }
        let mut daemon = command.spawn().unwrap();
        wait_until("the deliveries", || until(&path));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    };
    let listed = |config: &Path| {
        let out = callhook()
            .args(["outbox", "-c"])
            .arg(config)
            .args(["list", "--status", "all"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The system store alone does not know the private CA; ca_file does.
    run("state1", None, &|config| {
        receiver.received() >= 1 && listed(config).contains("UnknownIssuer")
    });
    assert_eq!(receiver.received(), 1);
    // With SSL_CERT_FILE naming the CA, the webhook without ca_file gets through too.
    let ca = dir.path().join("ca.pem");
    run("state2", Some(&ca), &|_| receiver.received() >= 3);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(receiver.received(), 3);
}
