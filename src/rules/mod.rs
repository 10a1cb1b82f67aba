//! Rules: events in, actions out (described, not executed).
//!
//! A [`RuleSet`] is the checked, compiled form of the `rules:` in the configuration (see
//! `config`): for each rule its event types, conditions (`matcher`), time window
//! (`during`), limits (`throttle`), and action (`action`: a webhook request or a
//! command, rendered through `template`). A [`RuleEngine`] holds a rule set and the
//! limits' state, and evaluates events in order: every matching rule fires unless an
//! earlier one that fired has `stop: true`.
//!
//! A rule with `scope: call` (the default of presets whose receiver keeps per-call
//! state, Zammad's CTI) judges its `when`, `during`, `threshold` and `throttle` once
//! per call, at the call's `ringing` event, and then fires for all of that call's
//! events or for none, so a receiver never gets a `hangup` for a call it was never
//! told of. A call whose `ringing` the engine did not see (it began before callhook
//! started reading) is not sent to such a rule at all. The daemon stores the decisions
//! with the jobs they made (`call_scope`), so they outlive a restart, kill -9 included:
//! a call that rang before it is still sent whole (or not at all) after it.

pub mod action;
pub mod broker;
pub mod ca_file;
pub mod call_scope;
pub mod config;
pub mod during;
pub mod matcher;
pub mod phone;
pub mod presets;
pub mod secret;
pub mod secret_ref;
pub mod template;
pub mod throttle;

use std::cell::OnceCell;
use std::sync::Arc;

use jiff::SignedDuration;
use minijinja::value::Value;

use self::action::{Action, Command, Secrets, Webhook};
use self::call_scope::{CallDecision, CallDecisions, CallScopeChanges};
use self::config::kind_index;
use self::during::During;
use self::matcher::Condition;
use self::template::{TemplateRef, Templates, context, context_for_rule};
use self::throttle::Window;
use crate::event::{CONTRACT_VERSION, Direction, EndedBy, Event, EventType, Outcome, SourceKind, event_id};

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
    /// Filters judged once per call (see the module docs).
    call_scope: bool,
    action: RuleAction,
}

#[derive(Debug)]
enum RuleAction {
    None,
    Webhook(Box<Webhook>),
    Command(Command),
    Nats(Box<broker::NatsAction>),
    Mqtt(Box<broker::MqttAction>),
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
    /// What `check` reports besides errors, each `FILE:LINE:COL: rule NAME: ...`.
    warnings: Vec<String>,
}

impl RuleSet {
    /// No rules at all.
    pub fn empty() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            templates: Templates::new(),
            secrets: Secrets::default(),
            warnings: Vec::new(),
        }
    }

    /// Problems that do not stop the rules from loading (`callhook check` shows them).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
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

    /// The NATS servers the rules publish to, each once: the outbox connects to them
    /// when it starts, so the first call's event does not wait for a connection.
    pub fn nats_servers(&self) -> Vec<crate::broker::nats::NatsServer> {
        let mut servers = Vec::new();
        for rule in &self.rules {
            if let RuleAction::Nats(action) = &rule.action
                && !servers.contains(action.server())
            {
                servers.push(action.server().clone());
            }
        }
        servers
    }

    /// `text` with the configuration's secrets replaced by `***` (in every encoding),
    /// for logs and printouts.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// Signing secret `index` of rule `rule` when it is written literally in the
    /// configuration (what a job's [`secret_ref::SecretSource::Rule`] names).
    pub fn literal_key(&self, rule: &str, index: usize) -> Option<String> {
        let rule = self.rules.iter().find(|r| r.name == rule)?;
        match &rule.action {
            RuleAction::Webhook(webhook) => webhook.literal_keys.get(index).cloned().flatten(),
            _ => None,
        }
    }

    /// Renders every template of every rule against a sample event of each type, so
    /// that a misspelt field fails at load, not on the first real call. Returns each
    /// failing rule's index with what failed (the first event type it fails for).
    fn check_templates(&self) -> Vec<(usize, String)> {
        let mut problems = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            for kind in [EventType::Ringing, EventType::Answered, EventType::Ended] {
                let event = sample_event(kind);
                let view = EventView::new(&event);
                let ctx = view.context_for(&rule.name);
                let result = self.render_action(rule, &ctx, &view).and_then(|_| {
                    for limit in [&rule.throttle, &rule.threshold].into_iter().flatten() {
                        if let Some(key) = &limit.key {
                            self.templates.render(key, &ctx)?;
                        }
                    }
                    Ok(())
                });
                if let Err(error) = result {
                    problems.push((index, format!("template fails for a {} event: {error}", kind.as_str())));
                    break;
                }
            }
        }
        problems
    }

    /// `rule`'s action for `view`'s event, `ctx` its template context.
    fn render_action(&self, rule: &Rule, ctx: &Value, view: &EventView) -> Result<Option<Action>, String> {
        let event = view.event;
        match &rule.action {
            RuleAction::None => Ok(None),
            RuleAction::Webhook(webhook) => webhook.render(&self.templates, ctx, view).map(Some),
            RuleAction::Command(command) => command.render(&self.templates, ctx, event).map(Some),
            RuleAction::Nats(nats) => Ok(Some(Action::Nats(nats.render(event)))),
            RuleAction::Mqtt(mqtt) => Ok(Some(Action::Mqtt(mqtt.render(event)))),
        }
    }
}

/// An event as the rules see it, with what they make of it made once, when a rule first
/// needs it, and shared by every rule that fires on it: its template context (without
/// a rule name; each rule's is this one with its name set over it) and its JSON (a
/// webhook whose body is the event). Each rule had made them anew: five times per
/// event with five such rules.
pub(crate) struct EventView<'a> {
    pub(crate) event: &'a Event,
    context: OnceCell<Value>,
    json: OnceCell<String>,
}

impl<'a> EventView<'a> {
    pub(crate) fn new(event: &'a Event) -> EventView<'a> {
        EventView {
            event,
            context: OnceCell::new(),
            json: OnceCell::new(),
        }
    }

    /// The template context without a rule name ([`context`]).
    fn context(&self) -> &Value {
        self.context.get_or_init(|| context(self.event, ""))
    }

    /// The template context of rule `rule`.
    fn context_for(&self, rule: &str) -> Value {
        context_for_rule(self.context(), rule)
    }

    /// The event's JSON ([`Event::to_json`]).
    pub(crate) fn json(&self) -> String {
        self.json.get_or_init(|| self.event.to_json()).clone()
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

/// Why a rule did not fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFired {
    /// Its conditions, window or limits said no (the reason, when asked to explain).
    Skipped(String),
    /// It matched, but one of its templates failed for this event.
    TemplateFailed(String),
}

impl std::fmt::Display for NotFired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotFired::Skipped(reason) => f.write_str(reason),
            NotFired::TemplateFailed(error) => write!(f, "template failed: {error}"),
        }
    }
}

/// One rule's evaluation of one event (for `callhook test`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub rule: String,
    /// `Ok` when it fired, with its action; else why not.
    pub fired: Result<Option<Action>, NotFired>,
}

/// A job for the outbox, made by a rule from an event being committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Idempotency key: the event id and the rule name (`webhook-id` is a hash of it).
    pub key: String,
    pub rule: String,
    /// What the job's delivery is grouped by (a webhook's origin, a command's program).
    pub endpoint: String,
    /// The rendered action, JSON; a webhook's with its body left empty ...
    pub action: String,
    /// ... and its body here (see [`Action::from_stored`]).
    pub body: Option<String>,
    /// Deliver after the call's earlier jobs to the same endpoint.
    pub ordered: bool,
}

/// Rules and the state of their limits; evaluates events.
#[derive(Debug)]
pub struct RuleEngine {
    set: Arc<RuleSet>,
    throttles: Vec<Window>,
    thresholds: Vec<Window>,
    /// Call-scoped rules' decisions for open calls.
    calls: CallDecisions,
}

impl RuleEngine {
    pub fn new(set: Arc<RuleSet>) -> RuleEngine {
        let n = set.rules.len();
        RuleEngine {
            set,
            throttles: (0..n).map(|_| Window::default()).collect(),
            thresholds: (0..n).map(|_| Window::default()).collect(),
            calls: CallDecisions::default(),
        }
    }

    /// Keeps the call-scope decisions made and dropped from now on, for the caller to
    /// store ([`RuleEngine::take_call_scope_changes`]).
    pub fn record_call_scope(&mut self) {
        self.calls.record();
    }

    /// Call-scope decisions an earlier run stored, for the calls still open.
    pub fn restore_call_scope(&mut self, decisions: impl IntoIterator<Item = CallDecision>) {
        self.calls.restore(decisions);
    }

    /// Call-scope decisions made and dropped since last asked (see `call_scope`).
    pub fn take_call_scope_changes(&mut self) -> CallScopeChanges {
        self.calls.take_changes()
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.set
    }

    /// Replaces the rules (hot reload). Limits start afresh; the decisions of rules
    /// still call-scoped under the same name stay, so open calls go on whole.
    pub fn replace(&mut self, set: Arc<RuleSet>) {
        let mut calls = std::mem::take(&mut self.calls);
        calls.retain_rules(|name| set.rules.iter().any(|r| r.call_scope && r.name == name));
        *self = RuleEngine::new(set);
        self.calls = calls;
    }

    /// The rules that fire for `event`, in order, with their rendered actions.
    pub fn evaluate(&mut self, event: &Event) -> Vec<Firing> {
        self.evaluations(event, false)
            .into_iter()
            .filter_map(|v| match v.fired {
                Ok(action) => Some(Firing {
                    rule: v.rule,
                    action: Ok(action),
                }),
                Err(NotFired::TemplateFailed(error)) => Some(Firing {
                    rule: v.rule,
                    action: Err(error),
                }),
                Err(NotFired::Skipped(_)) => None,
            })
            .collect()
    }

    /// Every rule's evaluation of `event`: fired (with its action) or why not. With
    /// `explain`, skipped rules are listed with their reason; without, only firings
    /// and template failures are (and no reason is worked out).
    pub fn evaluations(&mut self, event: &Event, explain: bool) -> Vec<Evaluation> {
        let set = self.set.clone();
        let mut evaluations = Vec::new();
        let view = EventView::new(event);
        let mut stopped_by: Option<&str> = None;
        for (index, rule) in set.rules.iter().enumerate() {
            let fired = match stopped_by {
                Some(by) => Err(NotFired::Skipped(format!(
                    "not evaluated: rule `{by}` fired with stop: true"
                ))),
                None => self.judge(&set, index, &view, explain),
            };
            if fired.is_ok() && rule.stop {
                stopped_by = Some(&rule.name);
            }
            if explain || !matches!(fired, Err(NotFired::Skipped(_))) {
                evaluations.push(Evaluation {
                    rule: rule.name.clone(),
                    fired,
                });
            }
        }
        evaluations
    }

    /// Rule `index` on `view`'s event: its switch, event types, `when`, `during`, limits,
    /// then its action rendered.
    fn judge(
        &mut self,
        set: &RuleSet,
        index: usize,
        view: &EventView,
        explain: bool,
    ) -> Result<Option<Action>, NotFired> {
        let event = view.event;
        let rule = &set.rules[index];
        let skip = |reason: &dyn Fn() -> String| NotFired::Skipped(if explain { reason() } else { String::new() });
        if !rule.enabled {
            return Err(skip(&|| "disabled".into()));
        }
        if rule.call_scope {
            return self.judge_call(set, index, view, explain);
        }
        if !rule.on[kind_index(event.kind)] {
            return Err(skip(&|| format!("on: not for {} events", event.kind.as_str())));
        }
        self.filters(set, index, view, explain)?;
        set.render_action(rule, &view.context_for(&rule.name), view)
            .map_err(NotFired::TemplateFailed)
    }

    /// A call-scoped rule on `event`: its filters decide at the call's `ringing`, the
    /// decision holds for the call's later events (see the module docs).
    fn judge_call(
        &mut self,
        set: &RuleSet,
        index: usize,
        view: &EventView,
        explain: bool,
    ) -> Result<Option<Action>, NotFired> {
        let event = view.event;
        let rule = &set.rules[index];
        let skip = |reason: &dyn Fn() -> String| NotFired::Skipped(if explain { reason() } else { String::new() });
        let decided = match (self.calls.get(&rule.name, &event.call_id), event.kind) {
            (Some(decided), _) => decided,
            (None, EventType::Ringing) => {
                let decided = self.filters(set, index, view, explain);
                if let Err(NotFired::TemplateFailed(_)) = decided {
                    return decided.map(|_| None);
                }
                self.calls.decide(&rule.name, &event.call_id, decided.is_ok());
                decided?;
                true
            }
            (None, _) => {
                return Err(skip(&|| {
                    "scope: call: the call's ringing was not seen, so it is not sent in part".into()
                }));
            }
        };
        if event.kind == EventType::Ended {
            self.calls.drop_call(&rule.name, &event.call_id);
        }
        if !decided {
            return Err(skip(&|| "scope: call: the call's first event did not pass".into()));
        }
        if !rule.on[kind_index(event.kind)] {
            return Err(skip(&|| format!("on: not for {} events", event.kind.as_str())));
        }
        set.render_action(rule, &view.context_for(&rule.name), view)
            .map_err(NotFired::TemplateFailed)
    }

    /// Rule `index`'s `when`, `during` and limits on `view`'s event.
    fn filters(&mut self, set: &RuleSet, index: usize, view: &EventView, explain: bool) -> Result<(), NotFired> {
        let event = view.event;
        let rule = &set.rules[index];
        let skip = |reason: &dyn Fn() -> String| NotFired::Skipped(if explain { reason() } else { String::new() });
        if let Some(when) = &rule.when
            && !when.check(event)
        {
            return Err(skip(&|| format!("when: {}", when.explain(event).unwrap_or_default())));
        }
        if let Some(during) = &rule.during
            && !during.contains(event)
        {
            return Err(skip(&|| format!("during: {}", during.explain(event))));
        }
        self.limits(set, index, event, view.context(), explain)
    }

    /// Rule `index`'s threshold, then its throttle: whether they let `event` through
    /// (counting it when they do).
    fn limits(
        &mut self,
        set: &RuleSet,
        index: usize,
        event: &Event,
        ctx: &Value,
        explain: bool,
    ) -> Result<(), NotFired> {
        let rule = &set.rules[index];
        let at = event.at.timestamp();
        let key = |limit: &Limit, what: &str| -> Result<String, NotFired> {
            match &limit.key {
                Some(template) => set
                    .templates
                    .render(template, ctx)
                    .map_err(|e| NotFired::TemplateFailed(format!("{what}.key: {e}"))),
                None => Ok(String::new()),
            }
        };
        if let Some(threshold) = &rule.threshold {
            let key = key(threshold, "threshold")?;
            if !self.thresholds[index].reach(&key, at, threshold.window, threshold.count) {
                let seen = || self.thresholds[index].recent(&key, at, threshold.window);
                return Err(NotFired::Skipped(if explain {
                    format!(
                        "threshold: {} of {} events within {:#}{}",
                        seen(),
                        threshold.count,
                        threshold.window,
                        key_note(&key)
                    )
                } else {
                    String::new()
                }));
            }
        }
        if let Some(throttle) = &rule.throttle {
            let key = key(throttle, "throttle")?;
            if !self.throttles[index].allow(&key, at, throttle.window, throttle.count) {
                return Err(NotFired::Skipped(if explain {
                    format!(
                        "throttle: fired {} times within {:#} already{}",
                        throttle.count,
                        throttle.window,
                        key_note(&key)
                    )
                } else {
                    String::new()
                }));
            }
        }
        Ok(())
    }

    /// The outbox jobs `event` makes: one per firing rule with an action. A template
    /// that fails for this event is logged and makes no job; the other rules go on.
    pub fn jobs(&mut self, event: &Event) -> Vec<Job> {
        let set = self.set.clone();
        let mut jobs = Vec::new();
        for firing in self.evaluate(event) {
            match firing.action {
                Ok(Some(action)) => jobs.push(job(event, firing.rule, action)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(rule = %firing.rule, call_id = %event.call_id, event = event.kind.as_str(), "rule matched but its template failed: {}", set.redact(&error));
                }
            }
        }
        jobs
    }
}

/// A rule engine shared by the sources (evaluation is short; a mutex suffices).
pub type SharedEngine = Arc<std::sync::Mutex<RuleEngine>>;

/// The job `rule` makes of `event` with its rendered `action`.
fn job(event: &Event, rule: String, mut action: Action) -> Job {
    let (endpoint, ordered) = match &action {
        Action::Webhook(request) => (
            url::Url::parse(&request.url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
            request.ordered,
        ),
        Action::Command(command) => (command.argv.first().cloned().unwrap_or_default(), true),
        // Always in order: the central callhook takes a call's events in the order they
        // arrive, and one that comes after a later one is dropped as a duplicate.
        Action::Nats(publish) => (format!("nats:{}", publish.server.url), true),
        Action::Mqtt(publish) => (format!("mqtt:{}", publish.server.url), true),
    };
    let body = match &mut action {
        Action::Webhook(request) => Some(std::mem::take(&mut request.body)),
        Action::Command(_) | Action::Nats(_) | Action::Mqtt(_) => None,
    };
    Job {
        // The outbox's idempotency key; what is sent as `webhook-id` is made from it
        // (ASCII, no `.`: dispatch `signing::message_id`).
        key: format!("{}.{}", event.id, rule),
        rule,
        endpoint,
        action: serde_json::to_string(&action).expect("action serializes"),
        body,
        ordered,
    }
}

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
