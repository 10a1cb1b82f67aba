//! The `callhook` binary as users run it: exit codes, messages, output.

use std::process::Command;

fn callhook() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callhook"));
    command.env("CALLHOOK_LOG", "info");
    command
}

fn fixture(case: &str) -> String {
    format!("{}/tests/fixtures/pjsip/{case}/phone.log", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn replay_prints_events_and_a_summary() {
    let out = callhook()
        .args([
            "replay",
            "--date",
            "2026-01-02",
            "--tz",
            "Europe/Berlin",
            &fixture("basic"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 10);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["at"], "2026-01-02T08:33:58.541+01:00");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("replay: 1038 lines, 4 calls, 10 events, 0 errors"),
        "{stderr}"
    );
}

#[test]
fn replay_from_stdin() {
    let mut child = callhook()
        .args(["replay", "-q", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(fixture("crlf-date")).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 7);
}

#[test]
fn unreadable_inputs_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("random.bin");
    std::fs::write(
        &binary,
        (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let missing = dir.path().join("missing.log");
    let out = callhook()
        .args(["replay"])
        .arg(&binary)
        .arg(&missing)
        .arg(fixture("basic"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("random.bin: not a PJSIP log"), "{stderr}");
    assert!(stderr.contains("missing.log: cannot read"), "{stderr}");
    // the good file is still replayed
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 10);
    // forced, the binary file gives nothing and no crash
    let out = callhook()
        .args(["replay", "--format", "sip_trace"])
        .arg(&binary)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn bad_config_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("callhook.yaml");
    std::fs::write(&config, "version: 1\nsources:\n  - kind: sip_trace\n    paht: x.log\n").unwrap();
    let out = callhook().args(["run", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("callhook.yaml") && stderr.contains("paht"), "{stderr}");
}

#[test]
fn demo_shows_the_four_calls() {
    let out = callhook().args(["demo", "--speed", "20"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 10, "{stdout}");
    // The rules fired: webhooks to the demo's own receiver, the screen pop for the two
    // incoming calls.
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("10 events, 11 webhooks delivered"), "{stderr}");
    assert!(stderr.contains("2 commands run"), "{stderr}");
    assert!(stderr.contains("command screen-pop ran for 5552001"), "{stderr}");
}

#[test]
fn check_test_and_outbox_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("callhook.yaml");
    std::fs::write(
        &config,
        "version: 1\nstate_dir: state\nsources: [{ kind: sip_trace, path: x.log }]\nrules:\n  - name: missed\n    on: ended\n    when: { outcome: missed }\n    webhook: { url: \"https://hooks.example.com/{{ remote_number }}\", preset: slack }\n",
    )
    .unwrap();
    let out = callhook().args(["check", "-c"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 source, 1 rule: missed)"));

    let out = callhook()
        .args(["test", "-c"])
        .arg(&config)
        .arg(fixture("basic"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout
            .matches("  fires  missed: POST https://hooks.example.com/5552002")
            .count(),
        1,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("  skips  missed: on: not for ringing events").count(),
        4,
        "{stdout}"
    );

    std::fs::write(&config, "version: 1\nsources: [{ kind: sip_trace, path: x.log }]\nrules:\n  - name: bad\n    when: { remote_number: { regex: \"(\" } }\n").unwrap();
    let out = callhook().args(["check", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("callhook.yaml:5:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // no database yet: a clear message
    let out = callhook()
        .args(["outbox", "--state-dir"])
        .arg(dir.path().join("nothing"))
        .arg("stats")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no state database"));
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = callhook().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("replay") && script.contains("outbox"),
            "{shell}: {script}"
        );
    }
    let out = callhook().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.starts_with(".ie") && page.contains(".TH callhook 1"), "{page}");
}

#[test]
fn replay_piped_shows_no_progress() {
    // A few MB: on a terminal this draws a progress bar on stderr; piped, only the summary.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.log");
    let one = std::fs::read(fixture("basic")).unwrap();
    std::fs::write(&big, one.repeat(40)).unwrap();
    let out = callhook()
        .env("CALLHOOK_LOG", "warn")
        .args(["replay", "--date", "2026-01-02", "--tz", "UTC"])
        .arg(&big)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains('\r') && !stderr.contains('\u{1b}'), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "only the summary: {stderr:?}");
    assert!(stderr.starts_with("replay: "), "{stderr:?}");
}

#[test]
fn log_format_json_and_color_flags() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.log");
    let out = callhook()
        .args(["--log-format", "json", "--color", "always", "replay"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let logged: Vec<serde_json::Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        logged
            .iter()
            .any(|l| l["level"] == "WARN" && l["fields"]["message"].as_str().is_some_and(|m| m.contains("none.log"))),
        "{stderr}"
    );
    let out = callhook()
        .args(["replay", "--color", "always"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stderr).unwrap().contains('\u{1b}'),
        "always: colour even when piped"
    );
    let out = callhook()
        .args(["replay", "--color", "never"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!String::from_utf8(out.stderr).unwrap().contains('\u{1b}'));
}

/// Issue 15: `check` lists every problem of a file in one run, each with the file's
/// name, its line and column and the lines around it, then a count; a bad key in one
/// rule hides neither a template typo nor a bad URL in the next.
#[test]
fn check_lists_every_problem_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("callhook.yaml");
    std::fs::write(
        &config,
        "version: 1\nsources: [{ kind: sip_trace, path: x.log }]\ninclude: [rules]\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let rules = [
        "rules:",                                              // 1
        "  - name: popup",                                     // 2
        "    bogus: 1",                                        // 3
        "    on: ringing",                                     // 4
        "  - name: screen",                                    // 5
        "    run:",                                            // 6
        "      argv: [\"/bin/echo\", \"{{ remote_nuber }}\"]", // 7
        "  - name: crm",                                       // 8
        "    on: ended",                                       // 9
        "    when: { direction: inbound }",                    // 10
        "    webhook:",                                        // 11
        "      url: \"ftp://crm.example.com/calls\"",          // 12
    ];
    std::fs::write(dir.path().join("rules/x.yaml"), rules.join("\n") + "\n").unwrap();
    let out = callhook().args(["check", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = dir.path().join("rules/x.yaml").display().to_string();
    for (place, needle) in [
        ("3:5", "rule `popup`: unknown field `bogus`"),
        (
            "7:31",
            "rule `screen`: run.argv[1]: `remote_nuber` is undefined: no event has it, did you mean `remote_number`?",
        ),
        ("12:12", "rule `crm`: webhook.url: scheme \"ftp\" is not http or https"),
    ] {
        let block = format!("error: {needle}");
        let at = stderr
            .find(&block)
            .unwrap_or_else(|| panic!("no {block:?} in:\n{stderr}"));
        let arrow = format!("  --> {file}:{place}\n");
        assert!(
            stderr[at..].contains(&arrow),
            "no {arrow:?} after {needle:?} in:\n{stderr}"
        );
    }
    // Each snippet shows its line with a caret, under the real file name (not <input>).
    assert!(
        stderr.contains("12 |       url: \"ftp://crm.example.com/calls\"\n   |            ^"),
        "{stderr}"
    );
    assert!(!stderr.contains("<input>"), "{stderr}");
    assert!(
        stderr.trim_end().ends_with(&format!("3 problems in {file}")),
        "{stderr}"
    );
}

/// A YAML syntax error stops serde-saphyr for that piece only: the rules after it are
/// still checked.
#[test]
fn check_goes_on_after_a_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("callhook.yaml");
    std::fs::write(
        &config,
        "version: 1\nsources: [{ kind: sip_trace, path: x.log }]\nrules:\n  - name: a\n    on: [ringing\n  - name: b\n    wehn: { direction: inbound }\n",
    )
    .unwrap();
    let out = callhook().args(["check", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let name = config.display().to_string();
    assert!(stderr.contains(&format!("--> {name}:5:9")), "{stderr}");
    assert!(stderr.contains("did you mean `when`?"), "{stderr}");
    assert!(stderr.contains(&format!("--> {name}:7:5")), "{stderr}");
    assert!(stderr.contains(&format!("2 problems in {name}")), "{stderr}");
}
