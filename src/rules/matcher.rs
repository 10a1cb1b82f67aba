//! `when:` conditions on event fields, built once, checked per event without allocating.
//!
//! ```yaml
//! when:
//!   direction: inbound                      # equals
//!   outcome: [missed, declined]             # one of
//!   remote_number: { regex: '^\+49' }       # regex (searched; anchor with ^ and $)
//!   remote_name: { not: { prefix: "Spam" } }
//!   talk_s: { gte: 60 }                     # numbers: gt, gte, lt, lte
//!   any:                                    # groups: any / all / not
//!     - { local_number: "101" }
//!     - { local_number: { glob: "10?" } }
//! ```

use regex::{Regex, RegexBuilder};
use serde_json::Value as Json;

use crate::event::Event;

/// Event fields a condition (and a template) can name.
pub const FIELD_NAMES: &[&str] = &[
    "type",
    "call_id",
    "direction",
    "local_number",
    "remote_number",
    "remote_name",
    "outcome",
    "status_code",
    "ended_by",
    "ring_s",
    "talk_s",
    "source",
    "source_path",
    "at",
    "id",
];

/// Compiled regexes may use at most this much memory.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// One event field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Type,
    CallId,
    Direction,
    LocalNumber,
    RemoteNumber,
    RemoteName,
    Outcome,
    StatusCode,
    EndedBy,
    RingS,
    TalkS,
    Source,
    SourcePath,
    Id,
}

/// A field's value in one event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    Text(&'a str),
    Number(f64),
    Missing,
}

impl std::fmt::Display for FieldValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Text(text) => write!(f, "{text:?}"),
            FieldValue::Number(n) => write!(f, "{n}"),
            FieldValue::Missing => f.write_str("null"),
        }
    }
}

impl Field {
    pub fn parse(name: &str) -> Result<Field, String> {
        let field = match name {
            "type" => Field::Type,
            "call_id" => Field::CallId,
            "direction" => Field::Direction,
            "local_number" => Field::LocalNumber,
            "remote_number" => Field::RemoteNumber,
            "remote_name" => Field::RemoteName,
            "outcome" => Field::Outcome,
            "status_code" => Field::StatusCode,
            "ended_by" => Field::EndedBy,
            "ring_s" => Field::RingS,
            "talk_s" => Field::TalkS,
            "source" => Field::Source,
            "source_path" => Field::SourcePath,
            "id" => Field::Id,
            _ => return Err(format!("unknown field `{name}`{}", did_you_mean(name, FIELD_NAMES))),
        };
        Ok(field)
    }

    /// This field's value in `event`.
    pub fn get(self, event: &Event) -> FieldValue<'_> {
        use FieldValue::*;
        let number = |n: Option<f64>| n.map(Number).unwrap_or(Missing);
        match self {
            Field::Type => Text(event.kind.as_str()),
            Field::CallId => Text(&event.call_id),
            Field::Direction => Text(event.direction.as_str()),
            Field::LocalNumber => Text(&event.local_number),
            Field::RemoteNumber => Text(&event.remote_number),
            Field::RemoteName => event.remote_name.as_deref().map(Text).unwrap_or(Missing),
            Field::Outcome => event.outcome.map(|o| Text(o.as_str())).unwrap_or(Missing),
            Field::StatusCode => number(event.status_code.map(f64::from)),
            Field::EndedBy => event.ended_by.map(|b| Text(b.as_str())).unwrap_or(Missing),
            Field::RingS => number(event.ring_s),
            Field::TalkS => number(event.talk_s),
            Field::Source => Text(event.source.as_str()),
            Field::SourcePath => Text(&event.source_path),
            Field::Id => Text(&event.id),
        }
    }
}

/// A test on one field's value.
#[derive(Debug, Clone)]
pub enum Test {
    Equals(Scalar),
    OneOf(Vec<Scalar>),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Glob(Regex),
    Regex(Regex),
    Compare(Comparison, f64),
    Exists(bool),
    Not(Box<Test>),
    All(Vec<Test>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

/// A value to compare with: text, or a number (status codes, seconds).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Text(String),
    Number(f64),
    Null,
}

impl Scalar {
    fn from_json(value: &Json) -> Result<Scalar, String> {
        match value {
            Json::String(s) => Ok(Scalar::Text(s.clone())),
            Json::Number(n) => Ok(Scalar::Number(n.as_f64().unwrap_or(f64::NAN))),
            Json::Bool(b) => Ok(Scalar::Text(b.to_string())),
            Json::Null => Ok(Scalar::Null),
            other => Err(format!("expected a value, found {other}")),
        }
    }

    fn equals(&self, value: FieldValue<'_>) -> bool {
        match (self, value) {
            (Scalar::Text(a), FieldValue::Text(b)) => a == b,
            (Scalar::Number(a), FieldValue::Number(b)) => a == &b,
            (Scalar::Text(a), FieldValue::Number(b)) => a.parse::<f64>().is_ok_and(|a| a == b),
            (Scalar::Number(a), FieldValue::Text(b)) => b.parse::<f64>().is_ok_and(|b| *a == b),
            (Scalar::Null, FieldValue::Missing) => true,
            _ => false,
        }
    }
}

const OPERATORS: &[&str] = &[
    "equals", "in", "not_in", "prefix", "suffix", "contains", "glob", "regex", "gt", "gte", "lt", "lte", "exists",
    "not",
];

impl Test {
    /// Builds a test from its YAML form (see the module docs).
    pub fn build(value: &Json) -> Result<Test, String> {
        match value {
            Json::Array(items) => Ok(Test::OneOf(
                items.iter().map(Scalar::from_json).collect::<Result<_, _>>()?,
            )),
            Json::Object(map) => {
                if map.is_empty() {
                    return Err("empty condition".into());
                }
                let mut tests = Vec::new();
                for (operator, argument) in map {
                    tests.push(Test::operator(operator, argument)?);
                }
                Ok(if tests.len() == 1 {
                    tests.remove(0)
                } else {
                    Test::All(tests)
                })
            }
            scalar => Ok(Test::Equals(Scalar::from_json(scalar)?)),
        }
    }

    fn operator(operator: &str, argument: &Json) -> Result<Test, String> {
        let text = || match argument {
            Json::String(s) => Ok(s.clone()),
            Json::Number(n) => Ok(n.to_string()),
            other => Err(format!("`{operator}` needs text, found {other}")),
        };
        let number = || {
            argument
                .as_f64()
                .ok_or_else(|| format!("`{operator}` needs a number, found {argument}"))
        };
        Ok(match operator {
            "equals" => Test::Equals(Scalar::from_json(argument)?),
            "in" => match argument {
                Json::Array(items) => Test::OneOf(items.iter().map(Scalar::from_json).collect::<Result<_, _>>()?),
                other => return Err(format!("`in` needs a list, found {other}")),
            },
            "not_in" => Test::Not(Box::new(Test::operator("in", argument)?)),
            "prefix" => Test::Prefix(text()?),
            "suffix" => Test::Suffix(text()?),
            "contains" => Test::Contains(text()?),
            "glob" => Test::Glob(compile(&glob_to_regex(&text()?))?),
            "regex" => Test::Regex(compile(&text()?)?),
            "gt" => Test::Compare(Comparison::Greater, number()?),
            "gte" => Test::Compare(Comparison::GreaterOrEqual, number()?),
            "lt" => Test::Compare(Comparison::Less, number()?),
            "lte" => Test::Compare(Comparison::LessOrEqual, number()?),
            "exists" => Test::Exists(argument.as_bool().ok_or("`exists` needs true or false")?),
            "not" => Test::Not(Box::new(Test::build(argument)?)),
            other => return Err(format!("unknown operator `{other}`{}", did_you_mean(other, OPERATORS))),
        })
    }

    /// Whether `value` passes.
    pub fn check(&self, value: FieldValue<'_>) -> bool {
        match self {
            Test::Equals(expected) => expected.equals(value),
            Test::OneOf(options) => options.iter().any(|o| o.equals(value)),
            Test::Prefix(p) => matches!(value, FieldValue::Text(t) if t.starts_with(p.as_str())),
            Test::Suffix(s) => matches!(value, FieldValue::Text(t) if t.ends_with(s.as_str())),
            Test::Contains(s) => matches!(value, FieldValue::Text(t) if t.contains(s.as_str())),
            Test::Glob(re) | Test::Regex(re) => match value {
                FieldValue::Text(t) => re.is_match(t),
                FieldValue::Number(n) => re.is_match(&n.to_string()),
                FieldValue::Missing => false,
            },
            Test::Compare(comparison, limit) => {
                let n = match value {
                    FieldValue::Number(n) => n,
                    FieldValue::Text(t) => match t.parse::<f64>() {
                        Ok(n) => n,
                        Err(_) => return false,
                    },
                    FieldValue::Missing => return false,
                };
                match comparison {
                    Comparison::Greater => n > *limit,
                    Comparison::GreaterOrEqual => n >= *limit,
                    Comparison::Less => n < *limit,
                    Comparison::LessOrEqual => n <= *limit,
                }
            }
            Test::Exists(wanted) => (value != FieldValue::Missing) == *wanted,
            Test::Not(inner) => !inner.check(value),
            Test::All(tests) => tests.iter().all(|t| t.check(value)),
        }
    }
}

fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("bad regex {pattern:?}: {e}"))
}

/// `*` any text, `?` one character, the rest literal; the glob covers the whole value.
fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}

/// A whole `when:` block: every entry must hold.
#[derive(Debug, Clone)]
pub enum Condition {
    Field(Field, Test),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

impl Condition {
    /// Builds a `when:` block (a map of field → test, with `any`/`all`/`not` groups).
    /// Errors name the field path, e.g. `when.any[1].remote_number`.
    pub fn build(value: &Json, path: &str) -> Result<Condition, String> {
        let Json::Object(map) = value else {
            return Err(format!("{path}: expected a map of field: condition, found {value}"));
        };
        let mut all = Vec::new();
        for (key, value) in map {
            let here = format!("{path}.{key}");
            let condition = match key.as_str() {
                "any" | "all" => {
                    let Json::Array(items) = value else {
                        return Err(format!("{here}: expected a list of conditions"));
                    };
                    let inner = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| Condition::build(item, &format!("{here}[{i}]")))
                        .collect::<Result<Vec<_>, _>>()?;
                    if key == "any" {
                        Condition::Any(inner)
                    } else {
                        Condition::All(inner)
                    }
                }
                "not" => Condition::Not(Box::new(Condition::build(value, &here)?)),
                name => {
                    let field = Field::parse(name).map_err(|e| format!("{path}: {e}"))?;
                    Condition::Field(field, Test::build(value).map_err(|e| format!("{here}: {e}"))?)
                }
            };
            all.push(condition);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Condition::All(all)
        })
    }

    /// Whether `event` meets the condition.
    pub fn check(&self, event: &Event) -> bool {
        match self {
            Condition::Field(field, test) => test.check(field.get(event)),
            Condition::All(all) => all.iter().all(|c| c.check(event)),
            Condition::Any(any) => any.iter().any(|c| c.check(event)),
            Condition::Not(inner) => !inner.check(event),
        }
    }

    /// Why `event` does not meet the condition (for `callhook test`); `None` if it does.
    pub(crate) fn explain(&self, event: &Event) -> Option<String> {
        match self {
            Condition::Field(field, test) => {
                let value = field.get(event);
                (!test.check(value)).then(|| format!("{field:?} is {value}, which fails {test}"))
            }
            Condition::All(all) => all.iter().find_map(|c| c.explain(event)),
            Condition::Any(any) => {
                let reasons: Vec<String> = any.iter().map(|c| c.explain(event)).collect::<Option<_>>()?;
                Some(format!("none of: {}", reasons.join("; ")))
            }
            Condition::Not(inner) => inner.check(event).then(|| "the `not` condition holds".to_owned()),
        }
    }
}

impl std::fmt::Display for Test {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Test::Equals(s) => write!(f, "equals {s:?}"),
            Test::OneOf(list) => write!(f, "one of {list:?}"),
            Test::Prefix(p) => write!(f, "prefix {p:?}"),
            Test::Suffix(s) => write!(f, "suffix {s:?}"),
            Test::Contains(s) => write!(f, "contains {s:?}"),
            Test::Glob(re) => write!(f, "glob {}", re.as_str()),
            Test::Regex(re) => write!(f, "regex {}", re.as_str()),
            Test::Compare(c, n) => write!(f, "{c:?} {n}"),
            Test::Exists(b) => write!(f, "exists: {b}"),
            Test::Not(t) => write!(f, "not ({t})"),
            Test::All(t) => write!(
                f,
                "all of {}",
                t.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// ", did you mean `x`?" for the closest of `known` to `name`, or nothing.
pub(crate) fn did_you_mean(name: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(", did you mean `{k}`?"))
        .unwrap_or_default()
}
