//! Rules as written in YAML, and their building into a checked [`RuleSet`].
//!
//! ```yaml
//! rules:
//!   - name: helpdesk-popup              # required, unique
//!     on: [ringing, answered, ended]    # default: all three
//!     when: { direction: inbound }      # see `matcher`
//!     during: { days: mon-fri, hours: "08:00-18:00", tz: Europe/Berlin }
//!     throttle: { key: "{{ remote_number }}", per: 30s, max: 1 }
//!     threshold: { count: 3, within: 10m, key: "{{ local_number }}" }
//!     stop: false                       # true: later rules are not evaluated for this event
//!     enabled: true
//!     webhook: { url: "https://desk.example.com/api/v1/cti/${env:CTI_TOKEN}", preset: zammad_cti }
//!     # or run: { argv: [...], timeout: 5s }
//! ```
//! Every problem is reported, each with file, line and column.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use jiff::SignedDuration;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::action::{Command, RunConfig, Secrets, Webhook, WebhookConfig};
use super::broker::{MqttAction, MqttActionConfig, NatsAction, NatsActionConfig};
use super::during::{During, DuringConfig};
use super::matcher::{Condition, did_you_mean};
use super::template::{Escape, Templates};
use super::{Limit, Rule, RuleAction, RuleSet};
use crate::duration::parse_duration;
use crate::event::EventType;
use crate::problem::Problem;
use crate::yaml::tree::Node;

/// One rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name; shown in logs and `callhook test`, part of each job's idempotency key.
    pub name: String,
    /// Event types the rule reacts to; default all.
    #[serde(default)]
    pub on: Option<OnConfig>,
    /// Conditions on event fields (see the README); all must hold.
    #[serde(default)]
    pub when: Option<BTreeMap<String, Spanned<serde_json::Value>>>,
    /// Time window the event must fall in.
    #[serde(default)]
    pub during: Option<DuringConfig>,
    /// At most `max` (default 1) firings per `key` within `per`.
    #[serde(default)]
    pub throttle: Option<LimitConfig>,
    /// Fire only when `count` matching events came within `within` (per `key`).
    #[serde(default)]
    pub threshold: Option<ThresholdConfig>,
    /// When the rule fires, stop evaluating later rules for this event.
    #[serde(default)]
    pub stop: bool,
    /// `false` keeps the rule but never fires it.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// `event` (filters judged per event) or `call` (judged once, at the call's
    /// `ringing`; the call is then sent whole or not at all). Default `call` for
    /// presets whose receiver keeps per-call state (`zammad_cti`), else `event`.
    #[serde(default)]
    pub scope: Option<Scope>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub run: Option<RunConfig>,
    /// Publish the event to NATS JetStream (see `rules::broker`).
    #[serde(default)]
    pub nats: Option<NatsActionConfig>,
    /// Publish the event to an MQTT broker (see `rules::broker`).
    #[serde(default)]
    pub mqtt: Option<MqttActionConfig>,
}

fn enabled() -> bool {
    true
}

/// `scope:` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Event,
    Call,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OnConfig {
    One(EventType),
    Many(Vec<EventType>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Template naming what is limited, e.g. `{{ remote_number }}`; default one key.
    #[serde(default)]
    pub key: Option<String>,
    /// The window, e.g. `30s`, `10m`.
    pub per: String,
    /// Firings allowed per window; default 1.
    #[serde(default)]
    pub max: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    #[serde(default)]
    pub key: Option<String>,
    pub count: u32,
    pub within: String,
}

/// A file holding rules only (from `include:`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub rules: Vec<Spanned<RuleConfig>>,
}

/// Rules read from one file, with what is needed to place their problems.
pub(crate) struct RulesSource<'a> {
    pub path: &'a Path,
    pub rules: &'a [Spanned<RuleConfig>],
    /// The file as a tree of positions (`None` when it is not valid YAML): a problem
    /// about `webhook.url` then points at the URL, not at the rule.
    pub tree: Option<&'a Node>,
    /// The file's text, to point at a named variable inside a template.
    pub text: &'a str,
}

/// Builds every rule of every source, `{desk}` in broker subjects and topics being
/// `desk`; on failure returns all problems, each placed at the value it is about (else
/// at its rule) and naming the rule. The templates of the rules that built are checked
/// even when others did not, so one run shows every mistake.
pub(crate) fn build_for_desk(
    sources: &[RulesSource<'_>],
    base: &Path,
    default_region: Option<super::phone::Region>,
    desk: &str,
) -> Result<RuleSet, Vec<Problem>> {
    let mut templates = Templates::new();
    templates.set_default_region(default_region);
    let mut secrets = Secrets::new(base.to_owned());
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    // Where each built rule was written, for its template problems.
    let mut written: Vec<Placer<'_>> = Vec::new();
    let mut names = HashSet::new();
    let mut warnings = Vec::new();
    for source in sources {
        for spanned in source.rules {
            let config = &spanned.value;
            let placer = Placer::new(source, spanned);
            let here = placer.here();
            if !names.insert(config.name.clone()) {
                problems.push(placer.problem(None, "another rule has this name"));
            }
            match build_rule(config, &mut templates, &mut secrets, (desk, base)) {
                Ok((rule, notes)) => {
                    warnings.extend(notes.into_iter().map(|note| format!("{here}: {note}")));
                    rules.push(rule);
                    written.push(placer);
                }
                Err(errors) => {
                    problems.extend(errors.into_iter().map(|(at, error)| placer.problem(at, &error)));
                }
            }
        }
    }
    let set = RuleSet {
        rules,
        templates,
        secrets,
        warnings,
    };
    for (index, error) in set.check_templates() {
        problems.push(written[index].problem(None, &error));
    }
    if problems.is_empty() { Ok(set) } else { Err(problems) }
}

/// Places the problems of one rule: at the position given, else at the value the
/// message's leading path names (`webhook.url: ...`), else at the rule.
struct Placer<'a> {
    source: &'a RulesSource<'a>,
    name: &'a str,
    at: (u64, u64),
    node: Option<&'a Node>,
}

impl<'a> Placer<'a> {
    fn new(source: &'a RulesSource<'a>, spanned: &'a Spanned<RuleConfig>) -> Placer<'a> {
        let at = (spanned.referenced.line(), spanned.referenced.column());
        let node = source
            .tree
            .and_then(|tree| tree.get("rules"))
            .and_then(|rules| rules.items().iter().find(|n| (n.line, n.column) == at));
        Placer {
            source,
            name: &spanned.value.name,
            at,
            node,
        }
    }

    /// `FILE:LINE:COL: rule NAME`, where the rule starts (for warnings).
    fn here(&self) -> String {
        format!(
            "{}:{}:{}: rule `{}`",
            self.source.path.display(),
            self.at.0,
            self.at.1,
            self.name
        )
    }

    fn problem(&self, at: Option<(u64, u64)>, error: &str) -> Problem {
        let path = error.split_once("event: ").map_or(error, |(_, rest)| rest);
        let at = at
            .or_else(|| {
                let node = self.node?.locate(path)?;
                Some((node.line, node.column + variable_offset(self.source.text, node, error)))
            })
            .unwrap_or(self.at);
        Problem::new(self.source.path, Some(at), format!("rule `{}`: {error}", self.name))
    }
}

/// How far into its value a template problem's variable (`` `remote_nuber` is
/// undefined``) is, on the value's first line; 0 when it is not found there.
fn variable_offset(text: &str, node: &Node, error: &str) -> u64 {
    let Some(variable) = error.split('`').nth(1).filter(|_| error.contains("` is undefined")) else {
        return 0;
    };
    let line = usize::try_from(node.line.saturating_sub(1))
        .ok()
        .and_then(|i| text.lines().nth(i))
        .unwrap_or_default();
    let from: String = line
        .chars()
        .skip(usize::try_from(node.column.saturating_sub(1)).unwrap_or(0))
        .collect();
    from.find(variable)
        .map_or(0, |byte| from[..byte].chars().count() as u64)
}

type Problems = Vec<(Option<(u64, u64)>, String)>;

/// A rule and the warnings about it, or its problems.
fn build_rule(
    config: &RuleConfig,
    templates: &mut Templates,
    secrets: &mut Secrets,
    (desk, base): (&str, &Path),
) -> Result<(Rule, Vec<String>), Problems> {
    let mut problems: Problems = Vec::new();
    let on = on_types(config.on.as_ref());
    let mut when = Vec::new();
    for (key, value) in config.when.iter().flatten() {
        let mut single = serde_json::Map::new();
        single.insert(key.clone(), value.value.clone());
        match Condition::build(&serde_json::Value::Object(single), "when") {
            Ok(condition) => when.push(condition),
            Err(e) => problems.push((Some((value.referenced.line(), value.referenced.column())), e)),
        }
    }
    let mut fail = |e: String| problems.push((None, e));
    let during = config
        .during
        .as_ref()
        .and_then(|d| During::build(d).map_err(|e| fail(format!("during.{e}"))).ok());
    let mut limit = |key: &Option<String>, window: &str, count: u32, what: &str| -> Option<Limit> {
        let window = parse_duration(window).map_err(|e| fail(format!("{what}: {e}"))).ok()?;
        let key = key
            .as_deref()
            .map(|k| {
                templates
                    .add(k, Escape::Text)
                    .map_err(|e| fail(format!("{what}.key: {e}")))
                    .ok()
            })
            .unwrap_or(None);
        if count == 0 {
            fail(format!("{what}: count must be at least 1"));
        }
        Some(Limit {
            key,
            window: SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX),
            count,
        })
    };
    let throttle = config
        .throttle
        .as_ref()
        .and_then(|t| limit(&t.key, &t.per, t.max.unwrap_or(1), "throttle"));
    let threshold = config
        .threshold
        .as_ref()
        .and_then(|t| limit(&t.key, &t.within, t.count, "threshold"));
    let given = [
        config.webhook.is_some(),
        config.run.is_some(),
        config.nats.is_some(),
        config.mqtt.is_some(),
    ];
    let action = match (&config.webhook, &config.run) {
        _ if given.iter().filter(|g| **g).count() > 1 => {
            fail("give one of `webhook`, `run`, `nats` or `mqtt`, not several (make a rule for each)".into());
            RuleAction::None
        }
        _ if config.nats.is_some() || config.mqtt.is_some() => broker_action(config, desk, base).unwrap_or_else(|e| {
            fail(e);
            RuleAction::None
        }),
        (Some(_), Some(_)) => RuleAction::None,
        (Some(webhook), None) => match Webhook::build(webhook, &config.name, templates, secrets) {
            Ok(webhook) => RuleAction::Webhook(Box::new(webhook)),
            Err(e) => {
                fail(format!("webhook.{e}"));
                RuleAction::None
            }
        },
        (None, Some(run)) => match Command::build(run, templates, secrets) {
            Ok(command) => RuleAction::Command(command),
            Err(e) => {
                fail(format!("run.{e}"));
                RuleAction::None
            }
        },
        (None, None) => RuleAction::None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let (call_scope, warnings) = scope(config, &action);
    let rule = Rule {
        name: config.name.clone(),
        on,
        when: (!when.is_empty()).then_some(Condition::All(when)),
        during,
        throttle,
        threshold,
        stop: config.stop,
        enabled: config.enabled,
        call_scope,
        action,
    };
    Ok((rule, warnings))
}

/// A rule's `nats` or `mqtt` action.
fn broker_action(config: &RuleConfig, desk: &str, base: &Path) -> Result<RuleAction, String> {
    if let Some(nats) = &config.nats {
        return NatsAction::build(nats, desk, base)
            .map(|a| RuleAction::Nats(Box::new(a)))
            .map_err(|e| format!("nats.{e}"));
    }
    match &config.mqtt {
        Some(mqtt) => MqttAction::build(mqtt, desk, base)
            .map(|a| RuleAction::Mqtt(Box::new(a)))
            .map_err(|e| format!("mqtt.{e}")),
        None => Ok(RuleAction::None),
    }
}

/// Whether the rule is call-scoped, and the warnings about its action and scope.
fn scope(config: &RuleConfig, action: &RuleAction) -> (bool, Vec<String>) {
    let (mut warnings, preset) = match action {
        RuleAction::Webhook(webhook) => (webhook.warnings.clone(), webhook.preset),
        _ => (Vec::new(), None),
    };
    let whole = preset.is_some_and(|p| p.needs_whole_calls());
    let call_scope = config.scope.map_or(whole, |s| s == Scope::Call);
    let filtered =
        config.when.is_some() || config.during.is_some() || config.throttle.is_some() || config.threshold.is_some();
    if whole && !call_scope && filtered {
        warnings.push(
            "scope: event with when/during/throttle/threshold: the receiver keeps state per call, and a \
             filter that lets part of a call through sends it events of calls it never heard of \
             (remove `scope: event`)"
                .into(),
        );
    }
    if whole && config.on.is_some() {
        warnings.push("on: the receiver needs every event of a call; sending only some leaves its calls open".into());
    }
    if let Some(run) = &config.run {
        warnings.extend(option_injection(&run.argv));
    }
    (call_scope, warnings)
}

/// Arguments that begin with a template and come before any `--`: a caller can make
/// them start with `-` (a SIP user part `--config=/tmp/x`) and be read as an option by
/// many programs. No shell is involved, but the program may still be steered.
fn option_injection(argv: &[String]) -> Vec<String> {
    let end_of_options = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    argv.iter()
        .enumerate()
        .skip(1)
        .take(end_of_options.saturating_sub(1))
        .filter(|(_, a)| a.trim_start().starts_with("{{") || a.trim_start().starts_with("{%"))
        .map(|(i, _)| {
            format!(
                "run.argv[{i}]: a caller value at the start of an argument can begin with `-` and be taken as an \
                 option; put it after a \"--\" argument, or in a `--name={{{{ value }}}}` form, or filter it with `dialable`"
            )
        })
        .collect()
}

/// `on:` as a flag per event type (all when not given).
fn on_types(on: Option<&OnConfig>) -> [bool; 3] {
    let Some(on) = on else { return [true; 3] };
    let list = match on {
        OnConfig::One(one) => std::slice::from_ref(one),
        OnConfig::Many(many) => many.as_slice(),
    };
    let mut flags = [false; 3];
    for kind in list {
        flags[kind_index(*kind)] = true;
    }
    flags
}

pub(crate) fn kind_index(kind: EventType) -> usize {
    match kind {
        EventType::Ringing => 0,
        EventType::Answered => 1,
        EventType::Ended => 2,
    }
}

/// Adds ", did you mean ..." to serde's unknown-field messages.
pub(crate) fn suggest(message: &str) -> String {
    let Some(start) = message.find("unknown field `") else {
        return message.to_owned();
    };
    let rest = &message[start + 15..];
    let Some(end) = rest.find('`') else {
        return message.to_owned();
    };
    let unknown = &rest[..end];
    let Some(expected) = rest.find("expected one of ").map(|i| &rest[i + 16..]) else {
        return message.to_owned();
    };
    let first_line = expected.lines().next().unwrap_or_default();
    let known: Vec<&str> = first_line
        .split(", ")
        .map(|k| k.trim_matches(|c: char| c == '`' || c.is_whitespace()))
        .collect();
    let hint = did_you_mean(unknown, &known);
    if hint.is_empty() {
        return message.to_owned();
    }
    let line_end = message[start..].find('\n').map(|i| start + i).unwrap_or(message.len());
    format!("{}{}{}", &message[..line_end], hint, &message[line_end..])
}
