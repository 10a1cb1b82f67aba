//! Secrets by reference: jobs hold where a secret comes from, never its value.
//!
//! A rule's `${env:NAME}` and `${file:PATH}` are read when the rules load (a missing one
//! is a config error, and printouts can hide the values), but in a template each one
//! becomes a variable whose value at render time is a *placeholder*. So the request a
//! rule renders, and the job stored for it, holds placeholders plus a table of
//! [`SecretSlot`]s: where each value is read (the variable's name, the file's path) and
//! how it is written where it stands ([`Encoding`]: as is, percent-encoded in a URL,
//! form-encoded, JSON-escaped). Dispatch reads the values when it sends
//! ([`SecretRefs::resolve`]) and puts them in ([`Resolved::expand`]); a secret gone by
//! then (a variable unset, a file removed) fails that attempt with an error naming it.
//! Signing keys are stored as a [`SecretSource`] alone; one written literally in the
//! configuration is taken from the rules in force ([`LiteralKeys`]).
//!
//! Caller data cannot forge a placeholder: each rendering draws a fresh random nonce and
//! its placeholders are `chs_<nonce>_<n>_`. The nonce exists only after the event being
//! rendered was read, so no caller value can hold it, and only the exact placeholders of
//! the job's own table are replaced. Placeholders are letters, digits and `_`, which
//! every encoding a request goes through (percent, form, JSON, header) leaves intact.
//!
//! [`redact`] hides secret values in every form they take on output: as is, percent-
//! and form-encoded (either hex case, `+` for a space), JSON-escaped (`\"`, `\\`, `\/`,
//! `\uXXXX`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

/// The template variables that stand for a rule's secrets: `__secret_0`, `__secret_1`, ...
pub(crate) const SECRET_VARIABLE: &str = "__secret_";

/// What a secret keeps as it is in a URL: unreserved characters and `/` (a secret may be
/// a path, as a Slack hook's `T…/B…/…` is).
const URL_SECRET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// What a lenient URL parser encodes (and a header escape: `%`), for redaction.
const MINIMAL: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');
const MINIMAL_AND_PERCENT: &AsciiSet = &MINIMAL.add(b'%');

/// Where a secret's value is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// `${env:NAME}`: the environment variable, as callhook sees it when sending.
    Env(String),
    /// `${file:PATH}`: the file's text without its final line break (path absolute).
    File(PathBuf),
    /// A signing secret written literally in the configuration: entry `index` of the
    /// `secret:` of rule `rule` in the rules in force.
    Rule { rule: String, index: usize },
}

impl SecretSource {
    /// `reference` is what stands between `${` and `}`; a file path is taken relative
    /// to `base`.
    pub(crate) fn parse(reference: &str, base: &Path) -> Result<SecretSource, String> {
        match reference.split_once(':') {
            Some(("env", name)) if !name.is_empty() => Ok(SecretSource::Env(name.to_owned())),
            Some(("file", path)) if !path.is_empty() => {
                let path = base.join(path);
                Ok(SecretSource::File(std::path::absolute(&path).unwrap_or(path)))
            }
            _ => Err(format!(
                "`${{{reference}}}`: expected `${{env:NAME}}` or `${{file:PATH}}`"
            )),
        }
    }

    /// The value now; the error names the secret and says what is missing.
    pub fn read(&self, literal: &LiteralKeys) -> Result<String, String> {
        match self {
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set (needed for `${{env:{name}}}`)")),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
            SecretSource::Rule { rule, index } => literal.get(rule, *index).ok_or_else(|| {
                format!(
                    "rule `{rule}` has no signing secret {index} in the configuration any more (it changed since this job was made)"
                )
            }),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "${{env:{name}}}"),
            SecretSource::File(path) => write!(f, "${{file:{}}}", path.display()),
            SecretSource::Rule { rule, index } => write!(f, "(secret {index} of rule `{rule}`)"),
        }
    }
}

/// How a secret is written where its placeholder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// As is: a header value, a text body, a command's argument or variable.
    Raw,
    /// Percent-encoded (all but unreserved characters and `/`): a URL's path or query.
    Url,
    /// As `Url`, right after the host (`https://host${env:PATH}`), where callhook writes
    /// the `/`: a leading `/` of the value is dropped.
    UrlAfterHost,
    /// `application/x-www-form-urlencoded` (`+` for a space): a form field.
    Form,
    /// Escaped for the inside of a JSON string.
    Json,
}

impl Encoding {
    pub fn apply(self, value: &str) -> String {
        match self {
            Encoding::Raw => value.to_owned(),
            Encoding::Url => utf8_percent_encode(value, URL_SECRET).collect(),
            Encoding::UrlAfterHost => Encoding::Url.apply(value.strip_prefix('/').unwrap_or(value)),
            Encoding::Form => url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
            Encoding::Json => json_inner(value),
        }
    }
}

/// `value` as the inside of a JSON string (serde_json's escaping, without the quotes).
fn json_inner(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned()
}

/// One secret in a rendered action: where it is read, how it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSlot {
    pub from: SecretSource,
    pub encoding: Encoding,
}

/// The secrets of one rendered action: its placeholders' nonce and their slots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRefs {
    /// Random per rendering (32 hex digits); empty when there are no slots.
    pub nonce: String,
    /// Slot `n` stands where the text holds [`SecretRefs::placeholder`]`(n)`.
    pub slots: Vec<SecretSlot>,
}

impl SecretRefs {
    /// A table for one rendering of `slots`, with a fresh nonce.
    pub(crate) fn fresh(slots: &[SecretSlot]) -> Result<SecretRefs, String> {
        if slots.is_empty() {
            return Ok(SecretRefs::default());
        }
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random numbers for secret placeholders: {e}"))?;
        Ok(SecretRefs {
            nonce: hex::encode(bytes),
            slots: slots.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The text that stands for slot `index`.
    pub fn placeholder(&self, index: usize) -> String {
        format!("chs_{}_{index}_", self.nonce)
    }

    /// The template variables of this rendering: `__secret_N` → placeholder `N`
    /// (marked safe, so JSON templates write it as it is).
    pub(crate) fn variables(&self) -> minijinja::value::Value {
        use minijinja::value::Value;
        let map: std::collections::BTreeMap<String, Value> = (0..self.slots.len())
            .map(|i| {
                (
                    format!("{SECRET_VARIABLE}{i}"),
                    Value::from_safe_string(self.placeholder(i)),
                )
            })
            .collect();
        Value::from(map)
    }

    /// Reads every secret now; the error names the first that cannot be read.
    pub fn resolve(&self, literal: &LiteralKeys) -> Result<Resolved, String> {
        let mut resolved = Resolved::default();
        for (index, slot) in self.slots.iter().enumerate() {
            let value = slot.from.read(literal)?;
            resolved
                .replacements
                .push((self.placeholder(index), slot.encoding.apply(&value)));
            resolved.values.push(value);
        }
        Ok(resolved)
    }

    /// `text` with each placeholder shown as the reference it stands for
    /// (`${env:NAME}`), for printouts.
    pub fn show(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (index, slot) in self.slots.iter().enumerate().rev() {
            out = out.replace(&self.placeholder(index), &slot.from.to_string());
        }
        out
    }
}

/// Secret values read for one delivery.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// (placeholder, value encoded for its place)
    replacements: Vec<(String, String)>,
    values: Vec<String>,
}

impl Resolved {
    /// `text` with every placeholder of the job replaced by its secret.
    pub fn expand(&self, text: &str) -> String {
        let mut out = text.to_owned();
        // From the last slot: placeholder 1 is no prefix of 10 (each ends in `_`), but
        // going down keeps that from mattering at all.
        for (placeholder, value) in self.replacements.iter().rev() {
            if out.contains(placeholder.as_str()) {
                out = out.replace(placeholder.as_str(), value);
            }
        }
        out
    }

    /// Adds a value to hide (a signing key read for this delivery).
    pub fn remember(&mut self, value: String) {
        self.values.push(value);
    }

    /// `text` with this delivery's secrets hidden, in every encoding.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.values)
    }
}

/// The signing secrets written literally in the rules in force, by rule name and
/// index; none by default.
#[derive(Clone, Default)]
pub struct LiteralKeys(Option<Arc<KeyLookup>>);

/// Finds a literal signing secret by rule name and index.
type KeyLookup = dyn Fn(&str, usize) -> Option<String> + Send + Sync;

impl LiteralKeys {
    pub fn new(lookup: impl Fn(&str, usize) -> Option<String> + Send + Sync + 'static) -> LiteralKeys {
        LiteralKeys(Some(Arc::new(lookup)))
    }

    fn get(&self, rule: &str, index: usize) -> Option<String> {
        self.0.as_ref().and_then(|lookup| lookup(rule, index))
    }
}

impl fmt::Debug for LiteralKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiteralKeys")
    }
}

/// Secret values shorter than this are not hidden (they would hide common text).
const SHORTEST_HIDDEN: usize = 3;

/// `text` with each of `values` replaced by `***`, in every form it can take on output.
pub fn redact(text: &str, values: &[String]) -> String {
    let mut forms: Vec<String> = values
        .iter()
        .filter(|v| v.chars().count() >= SHORTEST_HIDDEN)
        .flat_map(|v| forms_of(v))
        .filter(|f| !f.is_empty())
        .collect();
    // Longest first, so a secret's encoded form goes before a shorter secret in it.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    let mut out = text.to_owned();
    for form in forms {
        if out.contains(form.as_str()) {
            out = out.replace(form.as_str(), "***");
        }
    }
    out
}

/// The forms `value` can take on output.
fn forms_of(value: &str) -> Vec<String> {
    let percent = |set: &'static AsciiSet| utf8_percent_encode(value, set).to_string();
    let json = json_inner(value);
    let mut forms = vec![
        value.to_owned(),
        percent(NON_ALPHANUMERIC),
        percent(URL_SECRET),
        percent(MINIMAL),
        percent(MINIMAL_AND_PERCENT),
        Encoding::Form.apply(value),
        json.replace('/', "\\/"),
        json_ascii(&json, false),
        json_ascii(&json, true),
        json,
    ];
    let lower: Vec<String> = forms.iter().filter(|f| f.contains('%')).map(|f| lower_hex(f)).collect();
    forms.extend(lower);
    forms
}

/// A JSON-escaped text with every non-ASCII character as `\uXXXX` (UTF-16).
fn json_ascii(json: &str, upper: bool) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            if upper {
                out.push_str(&format!("\\u{unit:04X}"));
            } else {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// A percent-encoded text with lowercase hex digits (`%2b` for `%2B`).
fn lower_hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_percent = 0;
    for c in text.chars() {
        if after_percent > 0 {
            out.push(c.to_ascii_lowercase());
            after_percent -= 1;
        } else {
            out.push(c);
            if c == '%' {
                after_percent = 2;
            }
        }
    }
    out
}

/// A piece of a text with secret references.
enum Piece<'a> {
    Text(&'a str),
    /// What stood between `${` and `}`.
    Reference(&'a str),
}

/// Splits `text` at its `${...}` references.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        pieces.push(Piece::Text(&rest[..start]));
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed `${{` in {text:?}"));
        };
        pieces.push(Piece::Reference(&after[..end]));
        rest = &after[end + 1..];
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

/// `text` with its references replaced by their values now (for settings that are no
/// template and never stored, as `status.token`).
pub(crate) fn resolve_now(text: &str, base: &Path) -> Result<String, String> {
    let mut out = String::new();
    for piece in pieces(text)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Reference(reference) => {
                out.push_str(&SecretSource::parse(reference, base)?.read(&LiteralKeys::default())?)
            }
        }
    }
    Ok(out)
}

/// The secrets of a configuration as rules load: each reference read once (so a missing
/// one fails at load, and printouts can hide the values).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    base: PathBuf,
    values: Vec<String>,
}

impl Secrets {
    /// Secrets whose file paths are relative to `base` (the configuration's folder).
    pub fn new(base: PathBuf) -> Secrets {
        Secrets {
            base,
            values: Vec::new(),
        }
    }

    /// The configuration's folder.
    pub(crate) fn base(&self) -> &Path {
        &self.base
    }

    /// A template source with each `${...}` replaced by the variable of a new slot in
    /// `slots` (written with `encoding`); each secret is read now, to fail early.
    pub(crate) fn reference(
        &mut self,
        text: &str,
        encoding: Encoding,
        slots: &mut Vec<SecretSlot>,
    ) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        for piece in pieces(text)? {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Reference(reference) => {
                    let from = SecretSource::parse(reference, &self.base)?;
                    let value = from.read(&LiteralKeys::default())?;
                    if encoding == Encoding::Raw && value.chars().any(char::is_control) {
                        return Err(format!("secret `{from}` holds a line break or control character"));
                    }
                    self.values.push(value);
                    out.push_str(&format!("{{{{ {SECRET_VARIABLE}{} }}}}", slots.len()));
                    slots.push(SecretSlot { from, encoding });
                }
            }
        }
        Ok(out)
    }

    /// A value that is one secret whole (a signing key): `Some((source, value))` for a
    /// lone `${...}`, `None` when `text` holds no reference (a literal).
    pub(crate) fn whole(&mut self, text: &str) -> Result<Option<(SecretSource, String)>, String> {
        match pieces(text)?.as_slice() {
            [Piece::Text(_)] => {
                self.values.push(text.to_owned());
                Ok(None)
            }
            [Piece::Text(""), Piece::Reference(reference), Piece::Text("")] => {
                let from = SecretSource::parse(reference, &self.base)?;
                let value = from.read(&LiteralKeys::default())?;
                self.values.push(value.clone());
                Ok(Some((from, value)))
            }
            _ => Err("give the secret whole, as `${env:NAME}`, `${file:PATH}` or the text itself".into()),
        }
    }

    /// `text` with every secret hidden, in every encoding.
    pub(crate) fn redact(&self, text: &str) -> String {
        redact(text, &self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str = "my s3cr\"et+&=/ü\\key";

    #[test]
    fn encodings_put_the_secret_in_its_place() {
        assert_eq!(Encoding::Raw.apply(NASTY), NASTY);
        assert_eq!(Encoding::Url.apply(NASTY), "my%20s3cr%22et%2B%26%3D/%C3%BC%5Ckey");
        assert_eq!(Encoding::Form.apply(NASTY), "my+s3cr%22et%2B%26%3D%2F%C3%BC%5Ckey");
        assert_eq!(Encoding::Json.apply(NASTY), "my s3cr\\\"et+&=/ü\\\\key");
        let body = format!("{{\"k\": \"{}\"}}", Encoding::Json.apply(NASTY));
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["k"], NASTY);
    }

    #[test]
    fn every_encoding_is_redacted() {
        let values = vec![NASTY.to_owned()];
        let json = json_inner(NASTY);
        for form in [
            NASTY.to_owned(),
            Encoding::Url.apply(NASTY),
            Encoding::Form.apply(NASTY),
            lower_hex(&Encoding::Form.apply(NASTY)),
            utf8_percent_encode(NASTY, NON_ALPHANUMERIC).to_string(),
            json.clone(),
            json_ascii(&json, false),
            json_ascii(&json, true),
            json.replace('/', "\\/"),
        ] {
            let text = format!("error: <{form}> end");
            assert_eq!(redact(&text, &values), "error: <***> end", "{form}");
        }
        assert_eq!(redact("ab", &["ab".to_owned()]), "ab", "too short to hide");
    }

    #[test]
    fn placeholders_expand_only_for_their_own_table() {
        let slots = vec![
            SecretSlot {
                from: SecretSource::Env("CALLHOOK_TEST_SECRET_REF".into()),
                encoding: Encoding::Url,
            };
            11
        ];
        // SAFETY: no other test reads this variable.
        unsafe { std::env::set_var("CALLHOOK_TEST_SECRET_REF", "a b") };
        let one = SecretRefs::fresh(&slots).unwrap();
        let other = SecretRefs::fresh(&slots).unwrap();
        assert_ne!(one.nonce, other.nonce);
        let text = format!(
            "{} {} {}",
            one.placeholder(1),
            one.placeholder(10),
            other.placeholder(1)
        );
        let resolved = one.resolve(&LiteralKeys::default()).unwrap();
        assert_eq!(resolved.expand(&text), format!("a%20b a%20b {}", other.placeholder(1)));
        assert_eq!(one.show(&one.placeholder(10)), "${env:CALLHOOK_TEST_SECRET_REF}");
        let gone = SecretRefs::fresh(&[SecretSlot {
            from: SecretSource::Env("CALLHOOK_TEST_SURELY_UNSET".into()),
            encoding: Encoding::Raw,
        }])
        .unwrap();
        let error = gone.resolve(&LiteralKeys::default()).unwrap_err();
        assert!(error.contains("CALLHOOK_TEST_SURELY_UNSET is not set"), "{error}");
    }

    #[test]
    fn references_parse() {
        let base = Path::new("/etc/callhook");
        assert_eq!(
            SecretSource::parse("env:X", base).unwrap(),
            SecretSource::Env("X".into())
        );
        assert_eq!(
            SecretSource::parse("file:token", base).unwrap(),
            SecretSource::File(PathBuf::from("/etc/callhook/token"))
        );
        assert!(SecretSource::parse("vault:x", base).is_err());
        assert!(pieces("a ${env:X").is_err());
    }
}
