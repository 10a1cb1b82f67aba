//! Rules: events in, actions out (described, not executed).
//!
//! A [`RuleSet`] is the checked, compiled form of the `rules:` in the configuration (see
//! `config`): for each rule its event types, conditions (`matcher`), time window
//! (`during`), limits (`throttle`), and action (`action`: a webhook request or a
//! command, rendered through `template`). A [`RuleEngine`] holds a rule set and the
//! limits' state, and evaluates events in order: every matching rule fires unless an
//! earlier one that fired has `stop: true`.

pub mod action;
pub mod config;
pub mod during;
pub mod matcher;
pub mod template;
pub mod throttle;

use std::sync::Arc;

use jiff::SignedDuration;
use minijinja::value::Value;

use self::action::{Action, Command, Secrets, Webhook};
use self::config::kind_index;
use self::during::During;
use self::matcher::Condition;
use self::template::{TemplateRef, Templates, context};
use self::throttle::Window;
use crate::event::{CONTRACT_VERSION, Direction, EndedBy, Event, EventType, Outcome, SourceKind, event_id};
use crate::store::NewJob;

/// A checked rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    on: [bool; 3],
    when: Option<Condition>,
    during: Option<During>,
    throttle: Option<Limit>,
    threshold: Option<Limit>,
    stop: bool,
    enabled: bool,
    action: RuleAction,
}

#[derive(Debug)]
enum RuleAction {
    None,
    Webhook(Webhook),
    Command(Command),
}

/// A keyed limit: `count` per `window`, per rendered `key`.
#[derive(Debug)]
struct Limit {
    key: Option<TemplateRef>,
    window: SignedDuration,
    count: u32,
}

/// Rules of one configuration, compiled; immutable and shared.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    templates: Templates,
    secrets: Secrets,
}

impl RuleSet {
    /// No rules at all.
    pub fn empty() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            templates: Templates::new(),
            secrets: Secrets::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// `text` with the configuration's secrets replaced by `***`, for logs and printouts.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// Renders every template of every rule against a sample event of each type, so
    /// that a misspelt field fails at load, not on the first real call.
    fn check_templates(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for rule in &self.rules {
            for kind in [EventType::Ringing, EventType::Answered, EventType::Ended] {
                let event = sample_event(kind);
                let ctx = context(&event, &rule.name);
                let result = self.render_action(rule, &ctx, &event).and_then(|_| {
                    for limit in [&rule.throttle, &rule.threshold].into_iter().flatten() {
                        if let Some(key) = &limit.key {
                            self.templates.render(key, &ctx)?;
                        }
                    }
                    Ok(())
                });
                if let Err(error) = result {
                    problems.push(format!(
                        "rule `{}`: template fails for a {} event: {error}",
                        rule.name,
                        kind.as_str()
                    ));
                    break;
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    fn render_action(&self, rule: &Rule, ctx: &Value, event: &Event) -> Result<Option<Action>, String> {
        match &rule.action {
            RuleAction::None => Ok(None),
            RuleAction::Webhook(webhook) => webhook.render(&self.templates, ctx, event).map(Some),
            RuleAction::Command(command) => command.render(&self.templates, ctx, event).map(Some),
        }
    }
}

/// What one rule made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub rule: String,
    /// The rendered action (`None` for a rule without one); an error when a template
    /// failed for this event (reported, the other rules go on).
    pub action: Result<Option<Action>, String>,
}

/// Why a rule did not fire (for `callhook test`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub rule: String,
    /// `Ok` when it fired; else why not.
    pub fired: Result<Option<Action>, String>,
}

/// Rules and the state of their limits; evaluates events.
#[derive(Debug)]
pub struct RuleEngine {
    set: Arc<RuleSet>,
    throttles: Vec<Window>,
    thresholds: Vec<Window>,
}

impl RuleEngine {
    pub fn new(set: Arc<RuleSet>) -> RuleEngine {
        let n = set.rules.len();
        RuleEngine {
            set,
            throttles: (0..n).map(|_| Window::default()).collect(),
            thresholds: (0..n).map(|_| Window::default()).collect(),
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.set
    }

    /// Replaces the rules (hot reload). Limits start afresh.
    pub fn replace(&mut self, set: Arc<RuleSet>) {
        *self = RuleEngine::new(set);
    }

    /// The rules that fire for `event`, in order, with their rendered actions.
    pub fn evaluate(&mut self, event: &Event) -> Vec<Firing> {
        self.verdicts(event, false)
            .into_iter()
            .filter_map(|v| match v.fired {
                Ok(action) => Some(Firing {
                    rule: v.rule,
                    action: Ok(action),
                }),
                Err(reason) if reason.starts_with(TEMPLATE_FAILED) => Some(Firing {
                    rule: v.rule,
                    action: Err(reason[TEMPLATE_FAILED.len()..].to_owned()),
                }),
                Err(_) => None,
            })
            .collect()
    }

    /// Every rule's verdict on `event`: fired (with its action) or why not. With
    /// `explain`, reasons are spelled out; without, only firings are worked out fully.
    pub fn verdicts(&mut self, event: &Event, explain: bool) -> Vec<Verdict> {
        let set = self.set.clone();
        let mut verdicts = Vec::new();
        let mut ctx: Option<Value> = None;
        let mut stopped_by: Option<&str> = None;
        let at = event.at.timestamp();
        for (index, rule) in set.rules.iter().enumerate() {
            let no = |reason: String| Verdict {
                rule: rule.name.clone(),
                fired: Err(reason),
            };
            if let Some(by) = stopped_by {
                if explain {
                    verdicts.push(no(format!("not evaluated: rule `{by}` fired with stop: true")));
                }
                continue;
            }
            if !rule.enabled {
                if explain {
                    verdicts.push(no("disabled".into()));
                }
                continue;
            }
            if !rule.on[kind_index(event.kind)] {
                if explain {
                    verdicts.push(no(format!("on: not for {} events", event.kind.as_str())));
                }
                continue;
            }
            if let Some(when) = &rule.when
                && !when.check(event)
            {
                if explain {
                    verdicts.push(no(format!("when: {}", when.explain(event).unwrap_or_default())));
                }
                continue;
            }
            if let Some(during) = &rule.during
                && !during.contains(event)
            {
                if explain {
                    verdicts.push(no(format!("during: {}", during.explain(event))));
                }
                continue;
            }
            let ctx = ctx.get_or_insert_with(|| context(event, ""));
            let key = |limit: &Limit| -> Result<String, String> {
                match &limit.key {
                    Some(template) => set.templates.render(template, ctx),
                    None => Ok(String::new()),
                }
            };
            if let Some(threshold) = &rule.threshold {
                let key = match key(threshold) {
                    Ok(key) => key,
                    Err(e) => {
                        verdicts.push(no(format!("{TEMPLATE_FAILED}threshold.key: {e}")));
                        continue;
                    }
                };
                if !self.thresholds[index].reach(&key, at, threshold.window, threshold.count) {
                    if explain {
                        let seen = self.thresholds[index].recent(&key, at, threshold.window);
                        verdicts.push(no(format!(
                            "threshold: {seen} of {} events within {:#}{}",
                            threshold.count,
                            threshold.window,
                            key_note(&key)
                        )));
                    }
                    continue;
                }
            }
            if let Some(throttle) = &rule.throttle {
                let key = match key(throttle) {
                    Ok(key) => key,
                    Err(e) => {
                        verdicts.push(no(format!("{TEMPLATE_FAILED}throttle.key: {e}")));
                        continue;
                    }
                };
                if !self.throttles[index].allow(&key, at, throttle.window, throttle.count) {
                    if explain {
                        verdicts.push(no(format!(
                            "throttle: fired {} times within {:#} already{}",
                            throttle.count,
                            throttle.window,
                            key_note(&key)
                        )));
                    }
                    continue;
                }
            }
            let rule_ctx = context(event, &rule.name);
            let fired = match set.render_action(rule, &rule_ctx, event) {
                Ok(action) => Ok(action),
                Err(error) => Err(format!("{TEMPLATE_FAILED}{error}")),
            };
            verdicts.push(Verdict {
                rule: rule.name.clone(),
                fired,
            });
            if rule.stop {
                stopped_by = Some(&rule.name);
            }
        }
        verdicts
    }
}

/// A rule engine shared by the sources (evaluation is short; a mutex suffices).
pub type SharedEngine = Arc<std::sync::Mutex<RuleEngine>>;

impl RuleEngine {
    /// The outbox jobs `event` makes: one per firing rule with an action. A template
    /// that fails for this event is logged and makes no job; the other rules go on.
    pub fn jobs(&mut self, event: &Event) -> Vec<NewJob> {
        let set = self.set.clone();
        let mut jobs = Vec::new();
        for firing in self.evaluate(event) {
            match firing.action {
                Ok(Some(action)) => {
                    let ordered = match &action {
                        Action::Webhook(request) => request.ordered,
                        Action::Command(_) => true,
                    };
                    let endpoint = match &action {
                        Action::Webhook(request) => url::Url::parse(&request.url)
                            .map(|u| u.origin().ascii_serialization())
                            .unwrap_or_default(),
                        Action::Command(command) => command.argv.first().cloned().unwrap_or_default(),
                    };
                    jobs.push(NewJob {
                        key: format!("{}.{}", event.id, firing.rule),
                        rule: firing.rule,
                        endpoint,
                        action: serde_json::to_string(&action).expect("action serializes"),
                        ordered,
                    });
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(rule = %firing.rule, call_id = %event.call_id, event = event.kind.as_str(), "rule matched but its template failed: {}", set.redact(&error));
                }
            }
        }
        jobs
    }
}

/// Marks a verdict whose rule matched but whose template failed for this event.
const TEMPLATE_FAILED: &str = "template failed: ";

fn key_note(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" for key {key:?}")
    }
}

/// A full event of type `kind`, for checking templates at load.
fn sample_event(kind: EventType) -> Event {
    let ended = kind == EventType::Ended;
    Event {
        v: CONTRACT_VERSION,
        id: event_id(SourceKind::SipTrace, Direction::Inbound, "sample", kind),
        kind,
        at: jiff::Timestamp::UNIX_EPOCH.to_zoned_datetime(jiff::tz::TimeZone::UTC),
        call_id: "sample".into(),
        direction: Direction::Inbound,
        local_number: "101".into(),
        remote_number: "+4930123456".into(),
        remote_name: Some("Sample Caller".into()),
        outcome: ended.then_some(Outcome::Completed),
        status_code: ended.then_some(200),
        ended_by: ended.then_some(EndedBy::Remote),
        ring_s: ended.then_some(3.0),
        talk_s: ended.then_some(60.0),
        source: SourceKind::SipTrace,
        source_path: "MicroSIP_log.txt".into(),
    }
}
