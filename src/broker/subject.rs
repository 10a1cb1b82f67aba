//! Subject (NATS) and topic (MQTT) templates: `callhook.{desk}.{type}`,
//! `callhook/{desk}/{type}`.
//!
//! A template is text with `{field}` placeholders: `desk` (put in when the
//! configuration is loaded), and per event `type`, `direction`, `source`,
//! `local_number`, `remote_number`, `outcome` (`_` when absent) and `call_id`. Caller
//! ID is hostile, and in a subject a `.`, `*` or `>` (in a topic a `/`, `+` or `#`)
//! would change where a message goes or what a subscriber's wildcard matches; so every
//! value is reduced to one safe token ([`token`]): ASCII letters, digits, `-` and `_`
//! are kept, every other character becomes `_`, at most 64 characters, never empty
//! (`+49 30 1234` → `_49_30_1234`). The text around the placeholders is checked once, at
//! load, so a rendered name is always a valid subject or topic to publish to.

use crate::event::Event;

/// Which kind of name a template makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// A NATS subject: tokens separated by `.`.
    Nats,
    /// An MQTT topic: levels separated by `/`.
    Mqtt,
}

/// Longest value put in for one placeholder, in characters.
pub const MAX_TOKEN_CHARS: usize = 64;

/// The fields a template can name per event.
const FIELDS: [&str; 7] = [
    "type",
    "direction",
    "source",
    "local_number",
    "remote_number",
    "outcome",
    "call_id",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(&'static str),
}

/// A checked subject or topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    parts: Vec<Part>,
}

impl NameTemplate {
    /// Checks `written`; `{desk}` becomes `desk` (a valid desk name) now.
    pub fn parse(written: &str, desk: &str, flavor: Flavor) -> Result<NameTemplate, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = written;
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("{written:?}: `{{` without `}}`"))?;
            let name = &after[..close];
            if name == "desk" {
                text.push_str(desk);
            } else if let Some(field) = FIELDS.iter().find(|f| **f == name) {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Field(field));
            } else {
                return Err(format!(
                    "{written:?}: unknown placeholder `{{{name}}}` (known: desk, {})",
                    FIELDS.join(", ")
                ));
            }
            rest = &after[close + 1..];
        }
        text.push_str(rest);
        if text.contains('}') {
            return Err(format!("{written:?}: `}}` without `{{`"));
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let template = NameTemplate { parts };
        check(&template.with(|_| "x".to_owned()), flavor).map_err(|e| format!("{written:?}: {e}"))?;
        Ok(template)
    }

    /// The name for `event`, every value made a safe token.
    pub fn render(&self, event: &Event) -> String {
        self.with(|field| token(&field_value(event, field), MAX_TOKEN_CHARS))
    }

    fn with(&self, value: impl Fn(&str) -> String) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.clone(),
                Part::Field(field) => value(field),
            })
            .collect()
    }
}

/// The text of one event field, as a template names it.
fn field_value(event: &Event, field: &str) -> String {
    match field {
        "type" => event.kind.as_str().to_owned(),
        "direction" => event.direction.as_str().to_owned(),
        "source" => event.source.as_str().to_owned(),
        "local_number" => event.local_number.clone(),
        "remote_number" => event.remote_number.clone(),
        "outcome" => event.outcome.map(|o| o.as_str()).unwrap_or_default().to_owned(),
        _ => event.call_id.clone(),
    }
}

/// `text` as one safe token: ASCII letters, digits, `-`, `_` kept, anything else `_`,
/// at most `max` characters, `_` when empty.
pub fn token(text: &str, max: usize) -> String {
    let token: String = text
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if token.is_empty() { "_".to_owned() } else { token }
}

/// Whether `name` may be published to.
pub fn check(name: &str, flavor: Flavor) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("holds a space or control character".into());
    }
    match flavor {
        Flavor::Nats => {
            if name.contains(['*', '>']) {
                return Err("a subject to publish to cannot hold the wildcards `*` or `>`".into());
            }
            if name.split('.').any(str::is_empty) {
                return Err("empty token (a subject is tokens separated by single dots)".into());
            }
        }
        Flavor::Mqtt => {
            if name.contains(['+', '#']) {
                return Err("a topic to publish to cannot hold the wildcards `+` or `#`".into());
            }
            if name.starts_with('$') {
                return Err("topics starting with `$` belong to the broker".into());
            }
            if name.len() > 65_535 {
                return Err("longer than 65,535 bytes".into());
            }
        }
    }
    Ok(())
}

/// Whether NATS subject filter `filter` (with `*` and `>` wildcards) matches `subject`.
pub fn nats_matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for part in filter.split('.') {
        match (part, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (part, Some(token)) if part == token => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// The filter matching every name a template as written makes, for every desk: its
/// text before the first placeholder, cut to whole tokens (levels), then the
/// multi-level wildcard (`callhook.{desk}.{type}` → `callhook.>`); the name itself when
/// it has no placeholder.
pub fn covering_filter(written: &str, flavor: Flavor) -> String {
    let (separator, wildcard) = match flavor {
        Flavor::Nats => ('.', ">"),
        Flavor::Mqtt => ('/', "#"),
    };
    let Some(open) = written.find('{') else {
        return written.to_owned();
    };
    match written[..open].rfind(separator) {
        Some(at) => format!("{}{separator}{wildcard}", &written[..at]),
        None => wildcard.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(remote_number: &str) -> Event {
        let mut event: Event = serde_json::from_str(
            r#"{"v":1,"id":"00112233445566778899aabbccddeeff","type":"ringing","at":"2026-11-23T08:00:00+01:00","call_id":"c.1","direction":"inbound","local_number":"101","remote_number":"x","remote_name":null,"source":"sip_trace","source_path":"MicroSIP_log.txt"}"#,
        )
        .unwrap();
        event.remote_number = remote_number.to_owned();
        event
    }

    #[test]
    fn caller_values_become_one_token() {
        let t = NameTemplate::parse("callhook.{desk}.{type}.{remote_number}", "d1", Flavor::Nats).unwrap();
        assert_eq!(t.render(&event("5552001")), "callhook.d1.ringing.5552001");
        assert_eq!(t.render(&event("a.b.>")), "callhook.d1.ringing.a_b__");
        assert_eq!(t.render(&event("*")), "callhook.d1.ringing._");
        assert_eq!(t.render(&event("")), "callhook.d1.ringing._");
        assert_eq!(t.render(&event("+49 30 1234")), "callhook.d1.ringing._49_30_1234");
        let m = NameTemplate::parse("callhook/{desk}/{remote_number}", "d1", Flavor::Mqtt).unwrap();
        assert_eq!(m.render(&event("#/+/x")), "callhook/d1/____x");
        assert_eq!(m.render(&event(&"9".repeat(500))).len(), "callhook/d1/".len() + 64);
    }

    #[test]
    fn templates_are_checked_at_load() {
        for bad in [
            "callhook.>",
            "a..{type}",
            "callhook.{typo}",
            "a {type}",
            "x.{type",
            "x}",
        ] {
            assert!(NameTemplate::parse(bad, "d", Flavor::Nats).is_err(), "{bad}");
        }
        for bad in ["callhook/#", "callhook/+/{type}", "$SYS/{type}"] {
            assert!(NameTemplate::parse(bad, "d", Flavor::Mqtt).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        assert!(nats_matches("callhook.>", "callhook.d1.ringing"));
        assert!(nats_matches("callhook.*.ringing", "callhook.d1.ringing"));
        assert!(!nats_matches("callhook.*", "callhook.d1.ringing"));
        assert!(!nats_matches("other.>", "callhook.d1"));
        assert_eq!(covering_filter("callhook.{desk}.{type}", Flavor::Nats), "callhook.>");
        assert_eq!(covering_filter("{type}", Flavor::Nats), ">");
        assert_eq!(covering_filter("a.b", Flavor::Nats), "a.b");
        assert_eq!(covering_filter("callhook/{desk}/{type}", Flavor::Mqtt), "callhook/#");
    }
}
