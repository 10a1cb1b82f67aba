//! `callhook test`: rules applied to recorded events or a trace, nothing sent.
//!
//! Reads events (NDJSON, contract v1) or replays traces, evaluates every rule on every
//! event as the daemon would (limits included, by event time) and writes, per event,
//! which rules fired with their rendered actions and why the others did not. Secrets
//! are shown as `***`.

use std::io::{self, BufRead, Write};
use std::path::Path;

use crate::event::Event;
use crate::replay::{self, Input, ReplayOptions};
use crate::rules::action::Action;
use crate::rules::{RuleEngine, RuleSet};

/// Totals of a dry run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DryRunSummary {
    pub events: u64,
    pub firings: u64,
    pub template_errors: u64,
}

/// Reads the events of `path`: NDJSON events when its first non-blank character is
/// `{`, else a trace to replay.
pub fn read_events(path: &Path, options: &ReplayOptions) -> Result<Vec<Event>, String> {
    let text_start = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let first = text_start.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'{') {
        let mut events = Vec::new();
        for (index, line) in io::Cursor::new(&text_start).lines().enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let event: Event = serde_json::from_str(&line)
                .map_err(|e| format!("{}:{}: not an event: {e}", path.display(), index + 1))?;
            events.push(event);
        }
        return Ok(events);
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    replay::replay(&[Input::Path(path.to_owned())], options, &mut out, &mut |p| {
        problems.push(p.to_string())
    })
    .map_err(|e| e.to_string())?;
    if let Some(problem) = problems.first() {
        return Err(problem.clone());
    }
    String::from_utf8_lossy(&out)
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|e| e.to_string()))
        .collect()
}

/// Evaluates `rules` on `events` and writes the verdicts to `out`.
pub fn dry_run(rules: std::sync::Arc<RuleSet>, events: &[Event], out: &mut dyn Write) -> io::Result<DryRunSummary> {
    let mut engine = RuleEngine::new(rules.clone());
    let mut summary = DryRunSummary::default();
    for event in events {
        summary.events += 1;
        writeln!(
            out,
            "{} {} {} {} {}{} call {}",
            crate::event::rfc3339(&event.at),
            event.kind.as_str(),
            event.direction.as_str(),
            event.remote_number,
            event
                .remote_name
                .as_deref()
                .map(|n| format!("({n}) "))
                .unwrap_or_default(),
            event.outcome.map(|o| format!("[{}]", o.as_str())).unwrap_or_default(),
            event.call_id
        )?;
        for verdict in engine.verdicts(event, true) {
            match verdict.fired {
                Ok(action) => {
                    summary.firings += 1;
                    writeln!(out, "  fires  {}: {}", verdict.rule, describe(action.as_ref(), &rules))?;
                }
                Err(reason) => {
                    if reason.starts_with("template failed") {
                        summary.template_errors += 1;
                    }
                    writeln!(out, "  skips  {}: {}", verdict.rule, rules.redact(&reason))?;
                }
            }
        }
    }
    Ok(summary)
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
    };
    rules.redact(&text)
}
