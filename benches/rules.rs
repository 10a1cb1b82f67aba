//! Rule evaluation cost: `cargo bench --bench rules`. Ten rules of the usual kinds
//! (conditions, a regex, a time window, a throttle; webhooks and a command) over the
//! fixtures' events; prints the time per event, with and without rendering actions for
//! the rules that fire.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use callhook::config::Config;
use callhook::rules::RuleEngine;

const RULES: &str = r#"version: 1
sources: [{ kind: sip_trace, path: x.log }]
rules:
  - { name: r1, on: ringing, when: { direction: inbound, remote_number: { regex: '^\+49' } } }
  - { name: r2, on: ended, when: { outcome: [missed, declined], talk_s: { lt: 1 } } }
  - { name: r3, when: { local_number: "999" } }
  - { name: r4, when: { remote_name: { prefix: "Spam" } } }
  - { name: r5, on: answered, when: { remote_number: { glob: "+1*" } } }
  - { name: r6, during: { days: sat-sun, tz: Europe/Berlin } }
  - { name: r7, on: ended, when: { status_code: { gte: 500 } } }
  - name: r8
    on: ringing
    when: { direction: inbound }
    throttle: { key: "{{ remote_number }}", per: 30s }
    webhook: { url: "https://desk.example.com/api/v1/cti/token", preset: zammad_cti }
  - name: r9
    on: ended
    when: { direction: inbound, outcome: missed }
    webhook: { url: "https://hooks.example.com/x", preset: slack }
  - name: r10
    on: ringing
    when: { direction: inbound, any: [{ remote_number: { suffix: "1" } }, { remote_number: { contains: "200" } }] }
    run: { argv: ["/usr/bin/popup", "{{ remote_number }}"] }
"#;

fn main() {
    let config = Config::from_yaml(RULES, Path::new("bench.yaml")).unwrap();
    let mut events = Vec::new();
    for case in ["basic", "burst", "mixed-tcp", "forking-early", "noise", "redirect"] {
        events.extend(common::replay(&common::fixture(case)).0);
    }
    let rounds = 20_000;
    let total = (rounds * events.len()) as f64;

    // Matching only: the cost every event pays (the actions' rendering only for firings).
    let mut engine = RuleEngine::new(config.rules.clone());
    let start = Instant::now();
    let mut firings = 0usize;
    for _ in 0..rounds {
        for event in &events {
            firings += engine.evaluations(event, false).len();
        }
    }
    let with_render = start.elapsed().as_nanos() as f64 / total;
    println!("rules:                         {}", config.rules.len());
    println!(
        "events per round:              {} (fixtures), {} rounds",
        events.len(),
        rounds
    );
    println!("firings per event:             {:.2}", firings as f64 / total);
    println!(
        "evaluate 10 rules, per event:  {:.2} µs (including rendering the actions that fire)",
        with_render / 1000.0
    );

    // Events that no rule fires for: the common case on a busy line.
    let quiet: Vec<_> = events
        .iter()
        .filter(|e| RuleEngine::new(config.rules.clone()).evaluations(e, false).is_empty())
        .cloned()
        .collect();
    if !quiet.is_empty() {
        let mut engine = RuleEngine::new(config.rules.clone());
        let start = Instant::now();
        for _ in 0..rounds {
            for event in &quiet {
                std::hint::black_box(engine.evaluations(event, false));
            }
        }
        let per = start.elapsed().as_nanos() as f64 / (rounds * quiet.len()) as f64;
        println!("evaluate 10 rules, no firing:  {:.2} µs per event", per / 1000.0);
    }
}
