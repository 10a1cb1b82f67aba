//! Templates in rules (minijinja): compiled once at load, rendered per event.
//!
//! Caller ID is hostile, so what a template does with event data depends on where its
//! output goes, never on the template author remembering to escape:
//!
//! - [`Escape::Json`]: every `{{ value }}` is written as a JSON value (strings quoted and
//!   escaped), so a JSON body stays JSON whatever the caller's name holds;
//! - [`Escape::Url`]: every `{{ value }}` is percent-encoded as one path segment or query
//!   value, and only the part after `scheme://host/` may hold templates at all, so a
//!   template can never change where a webhook goes;
//! - [`Escape::Text`]: as is, for argv elements, environment values and headers (each one
//!   value handed to the OS or HTTP library, never parsed by a shell).
//!
//! Undefined variables are errors (a typo in a field name fails at `callhook check`,
//! which renders every template against a sample event). Fuel and output size are capped.
//! Secrets (`${env:NAME}`, `${file:PATH}`) never enter a template: each is a variable
//! whose value is a placeholder (see `secret_ref`), put in when a job is sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::phone::Region;
use super::presets::ChatEscape;
use crate::event::Event;

/// Most instructions one render may run (against runaway loops).
const FUEL: u64 = 100_000;
/// Longest output one render may produce, in bytes.
pub const MAX_OUTPUT: usize = 256 * 1024;

/// Characters left as they are when percent-encoding one URL segment or value.
const URL_SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// How the values in a template's output are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    Text,
    Json,
    Url,
    /// Text for a chat: each value made inert for that chat (see `presets`).
    Chat(ChatEscape),
}

impl Escape {
    fn suffix(self) -> &'static str {
        match self {
            Escape::Text | Escape::Chat(ChatEscape::Plain) => ".txt",
            Escape::Json => ".json",
            Escape::Url => ".url",
            Escape::Chat(ChatEscape::Slack) => ".slack",
            Escape::Chat(ChatEscape::Mattermost) => ".mattermost",
            Escape::Chat(ChatEscape::Markdown) => ".md",
        }
    }

    /// The chat escape a template name (by its suffix) calls for.
    fn chat_of(name: &str) -> Option<ChatEscape> {
        let suffix = name.rsplit('.').next()?;
        Some(match suffix {
            "slack" => ChatEscape::Slack,
            "mattermost" => ChatEscape::Mattermost,
            "md" => ChatEscape::Markdown,
            _ => return None,
        })
    }
}

/// The templates of one configuration, compiled.
pub struct Templates {
    env: Environment<'static>,
    count: usize,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Templates({})", self.count)
    }
}

/// A compiled template, by name in its [`Templates`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    name: String,
    /// The source had no template syntax: render is a copy.
    literal: Option<String>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(50);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".json") {
                AutoEscape::Json
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if state.name().ends_with(".url") {
                let text = if value.is_none() {
                    String::new()
                } else {
                    value.to_string()
                };
                let encoded: String = utf8_percent_encode(&text, URL_SAFE).collect();
                return out.write_str(&encoded).map_err(minijinja::Error::from);
            }
            if value.is_none() && !state.name().ends_with(".json") {
                return Ok(()); // a missing name is empty text, not "None"
            }
            if let Some(chat) = Escape::chat_of(state.name()) {
                return out
                    .write_str(&chat.apply(&value.to_string()))
                    .map_err(minijinja::Error::from);
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.add_filter("e164", |number: &str, given: Option<&str>| e164(number, given, None));
        env.add_filter("dialable", dialable);
        env.add_filter("duration", duration);
        env.add_filter("localtime", localtime);
        Templates { env, count: 0 }
    }

    /// Sets the region `e164` reads numbers without a country code in, when the filter
    /// is given none (`default_region:`).
    pub(crate) fn set_default_region(&mut self, region: Option<Region>) {
        self.env.add_filter("e164", move |number: &str, given: Option<&str>| {
            e164(number, given, region)
        });
    }

    /// Compiles `source` for output of kind `escape`; the error says what is wrong.
    pub(crate) fn add(&mut self, source: &str, escape: Escape) -> Result<TemplateRef, String> {
        self.count += 1;
        let name = format!("t{}{}", self.count, escape.suffix());
        let literal =
            (!source.contains("{{") && !source.contains("{%") && !source.contains("{#")).then(|| source.to_owned());
        self.env
            .add_template_owned(name.clone(), source.to_owned())
            .map_err(|e| describe(&e))?;
        self.check_names(&name)?;
        Ok(TemplateRef { name, literal })
    }

    /// Names a template uses that no event has: a typo (`{{ remote_numbr }}`) is told
    /// here, by name, with the closest field, instead of as "undefined value" at the
    /// first call.
    fn check_names(&self, name: &str) -> Result<(), String> {
        use crate::rules::matcher::{FIELD_NAMES, did_you_mean};
        const OTHERS: &[&str] = &["event", "rule", "range", "dict", "namespace", "debug", "loop", "self"];
        let template = self.env.get_template(name).map_err(|e| describe(&e))?;
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !FIELD_NAMES.contains(&v.as_str()) && !OTHERS.contains(&v.as_str()))
            .filter(|v| !v.starts_with(super::secret_ref::SECRET_VARIABLE))
            .collect();
        unknown.sort();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut known: Vec<&str> = FIELD_NAMES.to_vec();
        known.extend_from_slice(&OTHERS[..2]);
        // Every misspelt name at once, each with its closest field.
        Err(unknown
            .iter()
            .map(|variable| {
                format!(
                    "`{variable}` is undefined: no event has it{}",
                    did_you_mean(variable, &known)
                )
            })
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// Renders a template with `context`.
    pub(crate) fn render(&self, template: &TemplateRef, context: &Value) -> Result<String, String> {
        if let Some(literal) = &template.literal {
            return Ok(literal.clone());
        }
        let compiled = self.env.get_template(&template.name).map_err(|e| describe(&e))?;
        let output = compiled.render(context).map_err(|e| describe(&e))?;
        if output.len() > MAX_OUTPUT {
            return Err(format!("output longer than {MAX_OUTPUT} bytes"));
        }
        Ok(output)
    }
}

/// The variables a template sees: every event field (null when the event has none),
/// plus `rule` (the rule's name) and `event` (the whole event as an object).
pub fn context(event: &Event, rule: &str) -> Value {
    let json = serde_json::to_value(event).unwrap_or_default();
    // Converted once: each field is the event's own value (a shared handle), not
    // converted again.
    let whole = Value::from(minijinja::value::Serde(&json));
    let mut fields: BTreeMap<String, Value> = BTreeMap::new();
    for name in crate::rules::matcher::FIELD_NAMES {
        let value = whole
            .get_attr(name)
            .ok()
            .filter(|value| !value.is_undefined())
            .unwrap_or(Value::from(()));
        fields.insert((*name).to_owned(), value);
    }
    fields.insert("event".into(), whole);
    fields.insert("rule".into(), Value::from(rule));
    Value::from(fields)
}

/// [`context`] made for another rule: `ctx`'s variables, shared, and `rule`. Each rule
/// that fires renders with its own name, and building the context anew from the event
/// (or even copying its variables into a new map) cost more than most templates take
/// to render.
pub fn context_for_rule(ctx: &Value, rule: &str) -> Value {
    Value::from_object(RuleContext {
        base: ctx.clone(),
        rule: Value::from(rule),
    })
}

/// The variables of `base`, `rule` set over its own.
#[derive(Debug)]
struct RuleContext {
    base: Value,
    rule: Value,
}

impl minijinja::value::Object for RuleContext {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if key.as_str() == Some("rule") {
            return Some(self.rule.clone());
        }
        self.base.get_item(key).ok().filter(|value| !value.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        match self.base.try_iter() {
            Ok(names) => minijinja::value::Enumerator::Values(names.collect()),
            Err(_) => minijinja::value::Enumerator::Empty,
        }
    }
}

/// One line: the message and, when known, where in the template.
fn describe(error: &minijinja::Error) -> String {
    let mut text = error
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| error.kind().to_string());
    if let Some(line) = error.line() {
        text = format!("{text} (template line {line})");
    }
    text
}

/// `{{ number | e164 }}` or `{{ number | e164('DE') }}`: the number in E.164 form, read
/// in the region given, else in `region` (the configuration's `default_region`); a
/// text that is no valid number stays as it is (see `phone`). A region that is no
/// region is an error (found by `check`, which renders every template).
fn e164(number: &str, given: Option<&str>, region: Option<Region>) -> Result<String, minijinja::Error> {
    let region = match given {
        Some(text) => Some(
            Region::parse(text)
                .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("e164: {e}")))?,
        ),
        None => region,
    };
    Ok(super::phone::e164(number, region))
}

/// `{{ talk_s | duration }}`: seconds as `1h 02m 03s`, `2m 05s` or `45s`.
/// Only what can be dialled: digits, a leading `+`, `*` and `#`. A caller value made
/// safe to pass where it could otherwise be read as an option or a path.
fn dialable(number: &str) -> String {
    number
        .chars()
        .enumerate()
        .filter(|&(i, c)| c.is_ascii_digit() || c == '*' || c == '#' || (c == '+' && i == 0))
        .map(|(_, c)| c)
        .collect()
}

fn duration(seconds: Value) -> String {
    let total = f64::try_from(seconds).unwrap_or(0.0).max(0.0).round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

/// `{{ at | localtime("Europe/Berlin", "%d.%m.%Y %H:%M") }}`: an event time in a zone,
/// formatted (strftime); default zone this machine's, default format `%Y-%m-%d %H:%M:%S`.
fn localtime(at: &str, zone: Option<&str>, format: Option<&str>) -> Result<String, minijinja::Error> {
    let invalid = |message: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message);
    let timestamp: jiff::Timestamp = at.parse().map_err(|e| invalid(format!("not a time: {at:?}: {e}")))?;
    let tz = match zone {
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| invalid(format!("unknown time zone {name:?}: {e}")))?,
        None => jiff::tz::TimeZone::system(),
    };
    let zoned = timestamp.to_zoned_datetime(tz);
    let format = format.unwrap_or("%Y-%m-%d %H:%M:%S");
    jiff::fmt::strtime::format(format, &zoned).map_err(|e| invalid(format!("bad format {format:?}: {e}")))
}

/// Shared, immutable templates of a built rule set.
pub type SharedTemplates = Arc<Templates>;

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, escape: Escape, ctx: Value) -> Result<String, String> {
        let mut t = Templates::new();
        let r = t.add(source, escape)?;
        t.render(&r, &ctx)
    }

    /// The context holds what converting each field apart made (the way it was built
    /// before), and a context made for a rule from another is the one made for it.
    #[test]
    fn context_holds_every_field_and_the_rule() {
        for kind in [crate::event::EventType::Ringing, crate::event::EventType::Ended] {
            let event = crate::rules::sample_event(kind);
            let json = serde_json::to_value(&event).unwrap();
            let mut fields = BTreeMap::new();
            for name in crate::rules::matcher::FIELD_NAMES {
                let value = json.get(*name).cloned().unwrap_or(serde_json::Value::Null);
                fields.insert((*name).to_owned(), Value::from(minijinja::value::Serde(&value)));
            }
            fields.insert("event".into(), Value::from(minijinja::value::Serde(&json)));
            fields.insert("rule".into(), Value::from("r"));
            let expected = Value::from(fields);
            for made in [context(&event, "r"), context_for_rule(&context(&event, "other"), "r")] {
                assert_eq!(made, expected);
                assert_eq!(made.to_string(), expected.to_string());
            }
        }
    }

    fn ctx(name: &str) -> Value {
        let mut m = BTreeMap::new();
        m.insert("remote_name".to_owned(), Value::from(name));
        m.insert("remote_number".to_owned(), Value::from("+49 30 123"));
        Value::from(m)
    }

    #[test]
    fn json_bodies_stay_json_for_hostile_names() {
        for name in [
            "a \"quoted\" name",
            "back\\slash",
            "$(rm -rf /)",
            "{{ 7*7 }}",
            "line\nbreak",
            "\u{202E}x</script>",
        ] {
            let out = render(
                r#"{"name": {{ remote_name }}, "n": {{ remote_number }}}"#,
                Escape::Json,
                ctx(name),
            )
            .unwrap();
            let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(parsed["name"], name);
        }
    }

    #[test]
    fn url_values_are_one_encoded_segment() {
        let out = render(
            "/api/{{ remote_name }}?n={{ remote_number }}",
            Escape::Url,
            ctx("../../admin?x=1&y#z"),
        )
        .unwrap();
        assert_eq!(out, "/api/..%2F..%2Fadmin%3Fx%3D1%26y%23z?n=%2B49%2030%20123");
    }

    #[test]
    fn undefined_variables_are_errors() {
        let error = render("{{ remote_numbr }}", Escape::Text, ctx("x")).unwrap_err();
        assert!(error.contains("undefined"), "{error}");
        assert!(render("{{ ", Escape::Text, ctx("x")).is_err());
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let error = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            Escape::Text,
            ctx("x"),
        );
        assert!(error.is_err());
    }

    #[test]
    fn filters() {
        let us = Region::parse("US").ok();
        assert_eq!(e164("030 1234567", Some("49"), us).unwrap(), "+49301234567");
        assert_eq!(e164("030 1234567", Some("de"), us).unwrap(), "+49301234567");
        assert_eq!(e164("(212) 555-0123", None, us).unwrap(), "+12125550123");
        assert_eq!(e164("(212) 555-0123", None, None).unwrap(), "(212) 555-0123");
        assert_eq!(e164("anonymous", Some("DE"), us).unwrap(), "anonymous");
        assert!(e164("101", Some("Germany"), us).is_err());
        assert_eq!(duration(Value::from(3723)), "1h 02m 03s");
        assert_eq!(duration(Value::from(125.4)), "2m 05s");
        assert_eq!(duration(Value::from(7)), "7s");
        assert_eq!(
            localtime("2026-11-23T08:33:58.541+00:00", Some("Europe/Berlin"), Some("%H:%M")).unwrap(),
            "09:33"
        );
    }
}
