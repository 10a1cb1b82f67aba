//! The rule engine as configured in YAML: checking, matching, limits, rendering, and
//! hostile caller IDs staying inert data everywhere they can go.

mod common;

use std::path::Path;
use std::sync::Arc;

use callhook::config::Config;
use callhook::event::Event;
use callhook::rules::RuleEngine;
use callhook::rules::action::Action;

fn config(rules: &str) -> Result<Config, String> {
    let text = format!("version: 1\nsources:\n  - kind: sip_trace\n    path: x.log\nrules:\n{rules}");
    Config::from_yaml(&text, Path::new("/tmp/callhook-test.yaml")).map_err(|e| e.to_string())
}

fn event(json: &str) -> Event {
    let base = r#"{"v":1,"id":"e1","type":"ringing","at":"2026-11-23T09:15:00.000+01:00","call_id":"c1",
        "direction":"inbound","local_number":"101","remote_number":"+4930123","remote_name":"Alice",
        "source":"sip_trace","source_path":"x.log"}"#;
    let mut value: serde_json::Value = serde_json::from_str(base).unwrap();
    let patch: serde_json::Value = serde_json::from_str(json).unwrap();
    for (k, v) in patch.as_object().unwrap() {
        value[k] = v.clone();
    }
    serde_json::from_value(value).unwrap()
}

fn fired(engine: &mut RuleEngine, e: &Event) -> Vec<String> {
    engine.evaluate(e).into_iter().map(|f| f.rule).collect()
}

#[test]
fn conditions_on_fields() {
    let config = config(
        r#"
  - name: berlin
    when: { direction: inbound, remote_number: { regex: '^\+4930' } }
  - name: long-calls
    on: ended
    when: { talk_s: { gte: 60 }, outcome: completed }
  - name: not-anonymous
    when: { remote_number: { not: { in: [anonymous, ""] } } }
  - name: group
    when:
      any:
        - { local_number: "102" }
        - { remote_name: { glob: "Al*e" } }
"#,
    )
    .unwrap();
    let mut engine = RuleEngine::new(config.rules.clone());
    assert_eq!(fired(&mut engine, &event("{}")), ["berlin", "not-anonymous", "group"]);
    let long = event(
        r#"{"type":"ended","outcome":"completed","talk_s":75.5,"status_code":200,"remote_number":"anonymous","remote_name":null}"#,
    );
    assert_eq!(fired(&mut engine, &long), ["long-calls"]);
}

#[test]
fn stop_and_disabled() {
    let config =
        config("  - name: first\n    stop: true\n  - name: second\n  - name: off\n    enabled: false\n").unwrap();
    let mut engine = RuleEngine::new(config.rules.clone());
    assert_eq!(fired(&mut engine, &event("{}")), ["first"]);
    let verdicts = engine.evaluations(&event("{}"), true);
    assert!(
        verdicts[1]
            .fired
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("stop: true")
    );
}

#[test]
fn time_windows() {
    let config = config(
        "  - name: office\n    during: { days: mon-fri, hours: \"08:00-18:00\", tz: Europe/Berlin, except_dates: [\"2026-12-24\"] }\n",
    )
    .unwrap();
    let mut engine = RuleEngine::new(config.rules.clone());
    // Monday 09:15 Berlin
    assert_eq!(fired(&mut engine, &event("{}")).len(), 1);
    // Monday 19:00 Berlin
    assert!(fired(&mut engine, &event(r#"{"at":"2026-11-23T18:00:00.000Z"}"#)).is_empty());
    // Saturday
    assert!(fired(&mut engine, &event(r#"{"at":"2026-11-28T10:00:00.000+01:00"}"#)).is_empty());
    // a holiday
    let verdicts = engine.evaluations(&event(r#"{"at":"2026-12-24T10:00:00.000+01:00"}"#), true);
    assert!(
        verdicts[0]
            .fired
            .as_ref()
            .unwrap_err()
            .to_string()
            .starts_with("during:"),
        "{verdicts:?}"
    );
}

#[test]
fn throttle_and_threshold_by_event_time() {
    let config = config(
        r#"
  - name: popup
    throttle: { key: "{{ remote_number }}", per: 30s }
  - name: alert
    threshold: { count: 3, within: 10m }
"#,
    )
    .unwrap();
    let mut engine = RuleEngine::new(config.rules.clone());
    let at = |s: &str, n: &str| {
        event(&format!(
            r#"{{"at":"2026-11-23T09:{s}.000+01:00","remote_number":"{n}"}}"#
        ))
    };
    assert_eq!(fired(&mut engine, &at("00:00", "1")), ["popup"]);
    assert!(fired(&mut engine, &at("00:10", "1")).is_empty());
    assert_eq!(fired(&mut engine, &at("00:20", "2")), ["popup", "alert"]);
    assert_eq!(fired(&mut engine, &at("00:31", "1")), ["popup"]);
}

#[test]
fn problems_are_all_listed_with_positions_and_hints() {
    let error = config(
        r#"
  - name: a
    when: { remote_number: { regx: "x" } }
  - name: b
    when: { remote_numbr: "1" }
  - name: c
    when: { remote_number: { regex: "(" } }
  - name: d
    webhook: { url: "https://{{ remote_number }}.example.com/x" }
  - name: e
    run: { argv: ["/bin/echo", "{{ remote_nuber }}"] }
  - name: f
    webhook: { url: "https://x.example.com/${env:CALLHOOK_SURELY_UNSET}" }
"#,
    )
    .unwrap_err();
    for needle in [
        "callhook-test.yaml:8:28: rule `a`",
        "unknown operator `regx`, did you mean `regex`?",
        "unknown field `remote_numbr`, did you mean `remote_number`?",
        "bad regex",
        "rule `d`: webhook.url: templates may appear only in the path and query",
        "CALLHOOK_SURELY_UNSET is not set",
    ] {
        assert!(error.contains(needle), "missing {needle:?} in:\n{error}");
    }
    // a misspelt key
    let error = config("  - name: x\n    wehn: { direction: inbound }\n").unwrap_err();
    assert!(error.contains("did you mean `when`?"), "{error}");
    assert!(error.contains("line 7 column 5") || error.contains("7:5"), "{error}");
    // undefined template variables fail at load, not on the first call
    let error = config("  - name: t\n    run: { argv: [\"/bin/echo\", \"{{ remote_nuber }}\"] }\n").unwrap_err();
    assert!(error.contains("undefined"), "{error}");
}

const HOSTILE: &[&str] = &[
    r#"Robert"); DROP TABLE calls;--"#,
    "$(touch /tmp/pwned) `id` ; rm -rf / &",
    "{{ 7*7 }} {% raw %} ${env:HOME}",
    "a\"b\\c'd</script>",
    "Ünïcödé 李 🙂",
    "../../admin?x=1&y=2#frag",
];

#[test]
fn hostile_caller_ids_are_inert_in_json_urls_argv_and_env() {
    let config = config(
        r#"
  - name: json-template
    webhook:
      url: "https://hooks.example.com/calls/{{ remote_name }}?n={{ remote_number }}"
      body: '{"name": {{ remote_name }}, "number": {{ remote_number }}}'
  - name: json-value
    webhook:
      url: "https://hooks.example.com/v"
      json: { caller: { name: "{{ remote_name }}", number: "{{ remote_number }}" } }
  - name: generic
    webhook: { url: "https://hooks.example.com/g" }
  - name: slack
    webhook: { url: "https://hooks.example.com/s", preset: slack }
  - name: zammad
    webhook: { url: "https://hooks.example.com/z", preset: zammad_cti }
  - name: command
    run:
      argv: ["/usr/bin/popup", "--name", "{{ remote_name }}", "{{ remote_number }}"]
      env: { CALLER: "{{ remote_name }}" }
"#,
    )
    .unwrap();
    for hostile in HOSTILE {
        let e = event(&serde_json::json!({ "remote_name": hostile, "remote_number": hostile }).to_string());
        let mut engine = RuleEngine::new(config.rules.clone());
        let firings = engine.evaluate(&e);
        assert_eq!(firings.len(), 6, "{hostile}");
        for firing in firings {
            let action = firing.action.unwrap().unwrap();
            match action {
                Action::Webhook(request) => {
                    let url = url::Url::parse(&request.url).unwrap();
                    assert_eq!(url.host_str(), Some("hooks.example.com"), "{hostile}");
                    assert_eq!(url.scheme(), "https");
                    if firing.rule == "json-template" {
                        let segments: Vec<_> = url.path_segments().unwrap().collect();
                        assert_eq!(segments.len(), 2, "one segment for the name: {url}");
                        let decoded = percent_encoding::percent_decode_str(segments[1]).decode_utf8().unwrap();
                        assert_eq!(decoded, *hostile);
                        let query: Vec<_> = url.query_pairs().collect();
                        assert_eq!(query.len(), 1);
                        assert_eq!(query[0].1, *hostile);
                    }
                    match request.content_type.as_str() {
                        "application/json" => {
                            let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
                            let text = body.to_string();
                            match firing.rule.as_str() {
                                "json-template" => assert_eq!(body["name"], *hostile),
                                "json-value" => assert_eq!(body["caller"]["name"], *hostile),
                                "generic" => assert_eq!(body["remote_name"], *hostile),
                                // values escaped as Slack's formatting rules say (issue 13)
                                "slack" => assert!(
                                    body["text"]
                                        .as_str()
                                        .unwrap()
                                        .contains(&callhook::rules::presets::slack_escape(hostile))
                                ),
                                other => panic!("{other}: {text}"),
                            }
                        }
                        "application/x-www-form-urlencoded" => {
                            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(request.body.as_bytes())
                                .into_owned()
                                .collect();
                            assert!(pairs.contains(&("from".into(), hostile.to_string())), "{pairs:?}");
                        }
                        other => panic!("{other}"),
                    }
                }
                Action::Command(command) => {
                    assert_eq!(command.argv, ["/usr/bin/popup", "--name", hostile, hostile]);
                    assert!(command.env.contains(&("CALLER".into(), hostile.to_string())));
                    assert!(
                        command
                            .env
                            .contains(&("CALLHOOK_REMOTE_NAME".into(), hostile.to_string()))
                    );
                    let stdin: serde_json::Value = serde_json::from_str(command.stdin.as_deref().unwrap()).unwrap();
                    assert_eq!(stdin["remote_name"], *hostile);
                }
                other => panic!("no broker action in this configuration: {other:?}"),
            }
        }
    }
}

#[test]
fn every_example_in_rules_passes_check_and_fires_on_fixtures() {
    // The examples read their secrets from the environment.
    for (name, value) in [
        ("ZAMMAD_CTI_TOKEN", "example-token"),
        ("SLACK_WEBHOOK_PATH", "/services/T000/B000/XXXX"),
        ("CRM_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("ALERT_API_KEY", "example-key"),
        ("NATS_TOKEN", "example-nats-token"),
    ] {
        // SAFETY: set before any thread of this test reads the environment.
        unsafe { std::env::set_var(name, value) };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let basic = common::replay(&common::fixture("basic")).0;
    let burst = common::replay(&common::fixture("burst")).0;
    let mut expectations = vec![
        ("zammad-cti.yaml", &basic, 10),      // every event
        ("slack-missed.yaml", &basic, 1),     // Bob's missed call
        ("generic-webhook.yaml", &basic, 14), // 10 + 4 ended
        ("screen-pop.yaml", &basic, 2),       // two inbound calls, Monday morning
        ("demo.yaml", &basic, 13),            // 10 helpdesk + 1 missed alert + 2 screen pops
        ("desk-nats.yaml", &basic, 10),       // every event to the central callhook
        ("central-nats.yaml", &basic, 11),    // 10 to Zammad + Bob's missed call
    ];
    // 3 inbound calls declined in burst: not missed; the alert stays quiet
    expectations.push(("missed-alert.yaml", &burst, 0));
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("rules")).unwrap() {
        let path = entry.unwrap().path();
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let name = path.file_name().unwrap().to_str().unwrap();
        let (_, events, count) = expectations
            .iter()
            .find(|(n, ..)| *n == name)
            .unwrap_or_else(|| panic!("no expectation for rules/{name}"));
        let mut engine = RuleEngine::new(Arc::clone(&config.rules));
        let firings: usize = events.iter().map(|e| engine.evaluate(e).len()).sum();
        assert_eq!(firings, *count, "rules/{name}");
        seen += 1;
    }
    assert_eq!(seen, expectations.len());
}

#[test]
fn caller_values_that_could_be_options_are_warned_of_and_dialable_filters_them() {
    let risky = config("  - name: pop\n    run: { argv: [\"crm\", \"{{ remote_number }}\"] }\n").unwrap();
    assert!(
        risky
            .rules
            .warnings()
            .iter()
            .any(|w| w.contains("run.argv[1]") && w.contains("option")),
        "{:?}",
        risky.rules.warnings()
    );
    for safe in [
        "[\"crm\", \"--\", \"{{ remote_number }}\"]",
        "[\"crm\", \"--lookup={{ remote_number }}\"]",
    ] {
        let config = config(&format!("  - name: pop\n    run: {{ argv: {safe} }}\n")).unwrap();
        assert!(
            config.rules.warnings().is_empty(),
            "{safe}: {:?}",
            config.rules.warnings()
        );
    }
    let config =
        config("  - name: pop\n    run: { argv: [\"crm\", \"--\", \"{{ remote_number | dialable }}\"] }\n").unwrap();
    let mut engine = RuleEngine::new(config.rules.clone());
    let firings = engine.evaluate(&event(r#"{"remote_number":"--config=/tmp/x+49 (30) 123*#"}"#));
    match &firings[0].action {
        Ok(Some(Action::Command(command))) => assert_eq!(command.argv, ["crm", "--", "4930123*#"]),
        other => panic!("{other:?}"),
    }
}

/// issue 18: a rendered request holds placeholders for its secrets, never the values;
/// a caller who names itself after a placeholder (even one of an earlier job) gets its
/// text sent as it is, never a secret.
#[test]
fn secrets_are_placeholders_caller_data_cannot_forge() {
    const SECRET: &str = "t0k3n with \"quote\" +&=/";
    // SAFETY: set before any thread of this test reads the environment; unique name.
    unsafe { std::env::set_var("CALLHOOK_TEST_FORGE_TOKEN", SECRET) };
    let config = config(
        r#"
  - name: hook
    webhook:
      url: "https://example.com/x?token=${env:CALLHOOK_TEST_FORGE_TOKEN}&n={{ remote_name }}"
      headers: { Authorization: "Bearer ${env:CALLHOOK_TEST_FORGE_TOKEN}", X-Name: "{{ remote_name }}" }
      json: { token: "${env:CALLHOOK_TEST_FORGE_TOKEN}", name: "{{ remote_name }}" }
  - name: form
    webhook:
      url: "https://example.com/form"
      form: { token: "${env:CALLHOOK_TEST_FORGE_TOKEN}", name: "{{ remote_name }}" }
"#,
    )
    .unwrap();
    let mut engine = RuleEngine::new(config.rules.clone());
    let requests = |engine: &mut RuleEngine, e: &Event| -> Vec<callhook::rules::action::WebhookRequest> {
        engine
            .evaluate(e)
            .into_iter()
            .map(|f| match f.action {
                Ok(Some(Action::Webhook(request))) => request,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let first = requests(&mut engine, &event("{}"));
    for request in &first {
        let stored = serde_json::to_string(request).unwrap();
        assert!(!stored.contains("t0k3n"), "{stored}");
        assert!(
            stored.contains("CALLHOOK_TEST_FORGE_TOKEN"),
            "the job names its secret: {stored}"
        );
    }
    // Every placeholder the first jobs had, as the caller's name.
    let forged: Vec<String> = first
        .iter()
        .flat_map(|r| (0..r.secret_refs.slots.len()).map(|i| r.secret_refs.placeholder(i)))
        .collect();
    let forged = forged.join(" ");
    let patch = serde_json::json!({ "id": "e2", "call_id": "c2", "remote_name": forged }).to_string();
    let second = requests(&mut engine, &event(&patch));
    let (hook, form) = (&second[0], &second[1]);
    let resolved = hook.secret_refs.resolve(&Default::default()).unwrap();
    let url = url::Url::parse(&resolved.expand(&hook.url)).unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["token"], SECRET);
    assert_eq!(query["n"], forged);
    let header = |name: &str| {
        let (_, value) = hook.headers.iter().find(|(n, _)| n == name).unwrap();
        resolved.expand(value)
    };
    assert_eq!(header("Authorization"), format!("Bearer {SECRET}"));
    assert_eq!(header("X-Name"), forged);
    let body: serde_json::Value = serde_json::from_str(&resolved.expand(&hook.body)).unwrap();
    assert_eq!(body["token"], SECRET);
    assert_eq!(body["name"], forged.as_str());
    let resolved = form.secret_refs.resolve(&Default::default()).unwrap();
    let fields: std::collections::HashMap<_, _> = url::form_urlencoded::parse(resolved.expand(&form.body).as_bytes())
        .into_owned()
        .collect();
    assert_eq!(fields["token"], SECRET);
    assert_eq!(fields["name"], forged);

    // A secret right after the host is the path (a Slack hook's).
    // SAFETY: as above.
    unsafe { std::env::set_var("CALLHOOK_TEST_HOOK_PATH", "/services/T000/B000/XXXX") };
    let slack = crate::config(
        r#"
  - name: slack
    webhook: { url: "https://hooks.slack.com${env:CALLHOOK_TEST_HOOK_PATH}", preset: slack }
"#,
    )
    .unwrap();
    let mut engine = RuleEngine::new(slack.rules.clone());
    let request = &requests(&mut engine, &event("{}"))[0];
    assert!(!request.url.contains("T000"), "{}", request.url);
    let resolved = request.secret_refs.resolve(&Default::default()).unwrap();
    assert_eq!(
        resolved.expand(&request.url),
        "https://hooks.slack.com/services/T000/B000/XXXX"
    );
}

/// `default_region` and `e164` (issue 13): national numbers of the configured region
/// get its country code (NANP: +1), `e164('DE')` reads in another region, numbers
/// written with a country code keep it, and what is no number stays as it is.
#[test]
fn e164_reads_numbers_in_the_default_region() {
    let text = "version: 1\ndefault_region: US\nsources:\n  - kind: sip_trace\n    path: x.log\nrules:\n  - name: crm\n    webhook:\n      url: https://crm.example.com/calls\n      json: { us: \"{{ remote_number | e164 }}\", de: \"{{ remote_number | e164('DE') }}\", code: \"{{ remote_number | e164('44') }}\" }\n";
    let config = Config::from_yaml(text, Path::new("/tmp/callhook-test.yaml")).unwrap();
    let mut engine = RuleEngine::new(config.rules.clone());
    for (number, us, de, gb) in [
        // a US number; in Germany 212 is Solingen's area code, so it is one there too
        ("2125550123", "+12125550123", "+492125550123", "2125550123"),
        ("1-212-555-0123", "+12125550123", "1-212-555-0123", "1-212-555-0123"),
        // Berlin in Germany; in the UK, 030 is a valid non-geographic range
        ("03012345678", "03012345678", "+493012345678", "+443012345678"),
        ("00493012345678", "00493012345678", "+493012345678", "+493012345678"),
        ("02079460018", "02079460018", "02079460018", "+442079460018"),
        ("+442079460018", "+442079460018", "+442079460018", "+442079460018"),
        ("101", "101", "101", "101"),
        ("anonymous", "anonymous", "anonymous", "anonymous"),
        ("<!channel>", "<!channel>", "<!channel>", "<!channel>"),
    ] {
        let firing = engine.evaluate(&event(&format!(r#"{{"remote_number":{number:?}}}"#)));
        let Ok(Some(Action::Webhook(request))) = &firing[0].action else {
            panic!("{firing:?}")
        };
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(
            (
                body["us"].as_str().unwrap(),
                body["de"].as_str().unwrap(),
                body["code"].as_str().unwrap()
            ),
            (us, de, gb),
            "{number}"
        );
    }
    // a region that is none is told at load, with where it is written
    let error = Config::from_yaml(
        &text.replace("default_region: US", "default_region: Germany"),
        Path::new("/tmp/callhook-test.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("callhook-test.yaml:2:17: default_region: \"Germany\" is not a region"),
        "{error}"
    );
    let error = Config::from_yaml(
        &text.replace("e164('DE')", "e164('XX')"),
        Path::new("/tmp/callhook-test.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("rule `crm`") && error.contains("\"XX\" is not a region"),
        "{error}"
    );
}

/// Issue 15: the error of a configuration lists each problem once a line, placed at
/// the value it is about (what the daemon logs when a reload fails).
#[test]
fn every_problem_is_placed_at_its_value() {
    let error = config(
        "  - name: a\n    bogus: 1\n  - name: b\n    webhook: { url: \"https://x.example.com/{{ nope }}/{{ rule }}\" }\n  - name: c\n    throttle: { per: soon }\n",
    )
    .unwrap_err();
    for needle in [
        "callhook-test.yaml: 3 problems in /tmp/callhook-test.yaml:",
        "/tmp/callhook-test.yaml:7:5: rule `a`: unknown field `bogus`",
        "/tmp/callhook-test.yaml:9:47: rule `b`: webhook.url: `nope` is undefined",
        "/tmp/callhook-test.yaml:11:15: rule `c`: throttle: ",
    ] {
        assert!(error.contains(needle), "missing {needle:?} in:\n{error}");
    }
}
