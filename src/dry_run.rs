//! `callhook test`: rules applied to recorded inputs, nothing sent.
//!
//! Reads any number of inputs (NDJSON events, SIP traces, call-log CSVs,
//! `microsip.ini`) through the same reading and correlation as `callhook replay`
//! ([`crate::replay::events`]), so a trace and a CSV of the same calls fire each rule
//! once per call and type, exactly as `callhook run` would. For each event emitted it
//! evaluates every rule as the daemon would (limits included, by event time) and writes
//! which rules fired with their rendered actions and why the others did not. Secrets
//! are shown as `***`.

use std::io::{self, Write};
use std::sync::Arc;

use crate::event::{Event, escape_controls};
use crate::replay::{self, Input, Problem, ReplayOptions, ReplaySummary};
use crate::rules::action::Action;
use crate::rules::{NotFired, RuleEngine, RuleSet};

/// Totals of a dry run.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct DryRunSummary {
    pub events: u64,
    pub firings: u64,
    pub template_errors: u64,
    /// What was read.
    pub read: ReplaySummary,
}

/// Reads `inputs`, evaluates `rules` on each event emitted and writes the verdicts to
/// `out`; problems with the inputs go to `report`. Fails only when `out` cannot be
/// written.
pub fn dry_run(
    rules: Arc<RuleSet>,
    inputs: &[Input],
    options: &ReplayOptions,
    out: &mut dyn Write,
    report: &mut dyn FnMut(Problem<'_>),
) -> io::Result<DryRunSummary> {
    let mut engine = RuleEngine::new(rules.clone());
    let mut summary = DryRunSummary::default();
    let mut written = Ok(());
    summary.read = replay::events(inputs, options, report, &mut |event| {
        written = evaluate(&mut engine, &rules, event, out, &mut summary);
        written.is_ok()
    });
    written.map(|()| summary)
}

/// One event and every rule's verdict on it.
fn evaluate(
    engine: &mut RuleEngine,
    rules: &RuleSet,
    event: &Event,
    out: &mut dyn Write,
    summary: &mut DryRunSummary,
) -> io::Result<()> {
    summary.events += 1;
    // An NDJSON input may be crafted: nothing from it reaches the terminal raw.
    writeln!(
        out,
        "{} {} {} {} {}{} call {}",
        crate::event::rfc3339(&event.at),
        event.kind.as_str(),
        event.direction.as_str(),
        escape_controls(&event.remote_number),
        event
            .remote_name
            .as_deref()
            .map(|n| format!("({}) ", escape_controls(n)))
            .unwrap_or_default(),
        event.outcome.map(|o| format!("[{}]", o.as_str())).unwrap_or_default(),
        escape_controls(&event.call_id)
    )?;
    for evaluation in engine.evaluations(event, true) {
        match evaluation.fired {
            Ok(action) => {
                summary.firings += 1;
                writeln!(
                    out,
                    "  fires  {}: {}",
                    evaluation.rule,
                    describe(action.as_ref(), rules)
                )?;
            }
            Err(reason) => {
                if matches!(reason, NotFired::TemplateFailed(_)) {
                    summary.template_errors += 1;
                }
                writeln!(
                    out,
                    "  skips  {}: {}",
                    evaluation.rule,
                    rules.redact(&reason.to_string())
                )?;
            }
        }
    }
    Ok(())
}

fn describe(action: Option<&Action>, rules: &RuleSet) -> String {
    let text = match action {
        None => "(no action)".to_owned(),
        Some(Action::Webhook(request)) => {
            let headers: String = request
                .headers
                .iter()
                .map(|(k, v)| format!("\n           {k}: {v}"))
                .collect();
            format!(
                "{} {}{headers}\n           content-type: {}\n           {}",
                request.method, request.url, request.content_type, request.body
            )
        }
        Some(Action::Command(command)) => {
            let argv = serde_json::to_string(&command.argv).unwrap_or_default();
            format!(
                "run {argv} (timeout {} ms{})",
                command.timeout_ms,
                if command.stdin.is_some() {
                    ", event on stdin"
                } else {
                    ""
                }
            )
        }
        Some(Action::Nats(publish)) => format!(
            "nats {} subject {} (stream {}, Nats-Msg-Id {})\n           {}",
            publish.server.url, publish.subject, publish.stream.name, publish.msg_id, publish.body
        ),
        Some(Action::Mqtt(publish)) => format!(
            "mqtt {} topic {} (QoS 1)\n           {}",
            publish.server.url, publish.topic, publish.body
        ),
    };
    rules.redact(&text)
}
