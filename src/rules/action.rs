//! What a rule does when it fires: a webhook request or a command, described, not run.
//!
//! `WebhookConfig` / `RunConfig` are as written; `build` checks them and compiles their
//! templates; `render` turns one event into an [`Action`]: the exact request or argv to
//! execute. Executing belongs to dispatch. A rendered action holds no shell line and no
//! JSON made by pasting strings: argv is a list, JSON bodies come from a serializer or a
//! JSON-escaping template, URLs keep their configured scheme and host. Secrets are in it
//! as placeholders with a table of where each is read (`secret_ref`), never as values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use minijinja::value::Value;
use serde::{Deserialize, Serialize};

pub use super::presets::Preset;
pub use super::secret_ref::Secrets;
use super::secret_ref::{Encoding, SecretRefs, SecretSlot, SecretSource};
use super::template::{Escape, TemplateRef, Templates};
use super::{EventView, ca_file, presets, secret};
use crate::duration::parse_duration;
use crate::event::Event;

/// `webhook:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to send it. Templates may appear only after `scheme://host[:port]/`; their
    /// values are percent-encoded. `${env:NAME}` / `${file:PATH}` put secrets in (also
    /// percent-encoded, `/` kept), read when each request is sent.
    pub url: String,
    /// HTTP method; default POST.
    #[serde(default)]
    pub method: Option<String>,
    /// Extra headers; values are templates. A header named like a default one
    /// (`Content-Type`) replaces it; `webhook-*` headers are callhook's own.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A ready-made body for a known receiver: `generic` (the event as JSON, the
    /// default), `zammad_cti` (Zammad's generic CTI API), `slack`, `mattermost`,
    /// `teams` (Workflows, an Adaptive Card), `discord`, `ntfy` (see `presets`).
    #[serde(default)]
    pub preset: Option<Preset>,
    /// A JSON body template: every `{{ value }}` is written as a JSON value.
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON body as YAML; its strings are templates, the result is serialized. A
    /// string that is one `{{ expression }}` and nothing else keeps the expression's
    /// JSON type (number, bool, null, list, object); other strings stay strings.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// A form-encoded body: field name → template.
    #[serde(default)]
    pub form: Option<BTreeMap<String, String>>,
    /// For the chat presets: the message text (a template; each value in it escaped
    /// for that chat). Without a preset: a `text/plain` body.
    #[serde(default)]
    pub text: Option<String>,
    /// For `zammad_cti`: the agent name sent as `user`.
    #[serde(default)]
    pub user: Option<String>,
    /// Standard Webhooks signing secret (`whsec_` + base64 of the key, padded or not),
    /// or a list of them while rotating: each signs, the receiver accepts any.
    #[serde(default)]
    pub secret: Option<OneOrMany>,
    /// A PEM file of CA certificates trusted for this webhook besides the system's
    /// (a private CA); relative to the configuration file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Total time for one attempt; default 15s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// When to try again after a failure (see `RetryConfig`).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Deliveries in flight at once to this endpoint; default 4.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Deliver one call's jobs in event order (ringing, answered, ended), a later one
    /// only once the earlier is delivered or given up; default true.
    #[serde(default)]
    pub ordered: Option<bool>,
}

/// Retries of a failed webhook: exponential backoff with jitter, like Standard
/// Webhooks' schedule. Defaults: 8 attempts, first retry after 5s, each wait 6x the
/// one before (5s, 30s, 3m, 18m, ~2h), capped at 10h.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub first: Option<String>,
    #[serde(default)]
    pub factor: Option<f32>,
    #[serde(default)]
    pub max_delay: Option<String>,
}

/// A checked retry policy, carried by each webhook job.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub first_ms: u64,
    pub factor: f32,
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            first_ms: 5_000,
            factor: 6.0,
            max_ms: 10 * 3600 * 1000,
        }
    }
}

impl Eq for RetryPolicy {}

impl RetryPolicy {
    pub(super) fn build(config: &RetryConfig) -> Result<RetryPolicy, String> {
        let default = RetryPolicy::default();
        let ms = |text: &Option<String>, default: u64| -> Result<u64, String> {
            Ok(text
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .map(|d| d.as_millis() as u64)
                .unwrap_or(default))
        };
        let policy = RetryPolicy {
            attempts: config.attempts.unwrap_or(default.attempts).max(1),
            first_ms: ms(&config.first, default.first_ms)?,
            factor: config.factor.unwrap_or(default.factor),
            max_ms: ms(&config.max_delay, default.max_ms)?,
        };
        if !(1.0..=100.0).contains(&policy.factor) {
            return Err(format!("retry.factor: {} is not between 1 and 100", policy.factor));
        }
        Ok(policy)
    }

    /// How long to wait after the `failures`-th failed attempt (1 = the first), with
    /// jitter; `None` when no attempt is left.
    /// How long all of a job's attempts take at most: the delays between them without
    /// jitter (which only shortens them).
    pub(crate) fn span(&self) -> Duration {
        let mut delay = self.first_ms as f64;
        let mut total = 0.0;
        for _ in 1..self.attempts {
            total += delay.min(self.max_ms as f64);
            delay *= f64::from(self.factor);
        }
        Duration::from_millis(total.min(u64::MAX as f64 / 2.0) as u64)
    }

    pub(crate) fn delay_after(&self, failures: u32) -> Option<Duration> {
        if failures >= self.attempts {
            return None;
        }
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(self.first_ms))
            .with_factor(self.factor)
            .with_max_delay(Duration::from_millis(self.max_ms))
            .with_max_times(self.attempts as usize)
            .with_jitter()
            .build()
            .nth(failures.saturating_sub(1) as usize)
    }
}

/// One text or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

/// Reads `secrets` as a list, or a stored job's older single `secret` (or null).
fn secrets_of<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(OneOrMany::One(one)) => vec![one],
        Some(OneOrMany::Many(many)) => many,
    })
}

/// `run:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Program and arguments, each a template; never run through a shell.
    pub argv: Vec<String>,
    /// Extra environment variables (templates), besides the `CALLHOOK_*` ones.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Kill the command (and its children) after this long; default 10s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Write the event as JSON to the command's stdin; default true.
    #[serde(default = "yes")]
    pub stdin: bool,
}

fn yes() -> bool {
    true
}

/// A rendered action, ready for dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Webhook(WebhookRequest),
    Command(CommandSpec),
    /// A JetStream publish (`nats:`), see `rules::broker`.
    Nats(super::broker::NatsPublish),
    /// An MQTT QoS 1 publish (`mqtt:`), see `rules::broker`.
    Mqtt(super::broker::MqttPublish),
}

impl Action {
    /// An action as the store holds it (its serde JSON). A webhook's, nearly every job's,
    /// is read straight into its request: serde reads an internally tagged enum by
    /// buffering the whole document first (every string copied once more), half the
    /// cost of reading an action, and the outbox reads one per delivery. The tag comes
    /// first (serde writes it before the fields) and the request's fields take no
    /// notice of it; anything else goes the general way.
    pub fn from_json(json: &str) -> Result<Action, serde_json::Error> {
        if json.starts_with(r#"{"kind":"webhook","#) {
            serde_json::from_str(json).map(Action::Webhook)
        } else {
            serde_json::from_str(json)
        }
    }

    /// An action as a job stores it: its JSON ([`Action::from_json`]) and, for a
    /// webhook, its body apart (`None` in a job stored before bodies were kept apart,
    /// whose JSON holds its body).
    pub fn from_stored(json: &str, body: Option<String>) -> Result<Action, serde_json::Error> {
        let mut action = Action::from_json(json)?;
        if let (Action::Webhook(request), Some(body)) = (&mut action, body) {
            request.body = body;
        }
        Ok(action)
    }

    /// The action as `callhook test` and `callhook outbox show` print it: each secret
    /// as the reference it stands for (`${env:NAME}`), never its value.
    pub fn describe(&self) -> String {
        const INDENT: &str = "\n           ";
        match self {
            Action::Webhook(request) => {
                let show = |text: &str| request.secret_refs.show(text);
                let headers: String = request
                    .headers
                    .iter()
                    .map(|(name, value)| format!("{INDENT}{name}: {}", show(value)))
                    .collect();
                let signing: Vec<String> = request.signing.iter().map(ToString::to_string).collect();
                let signed = match (signing.is_empty(), request.secrets.is_empty()) {
                    (true, true) => String::new(),
                    (false, _) => format!("{INDENT}signed with {}", signing.join(", ")),
                    (true, false) => format!("{INDENT}signed"),
                };
                format!(
                    "{} {}{headers}{INDENT}content-type: {}{signed}{INDENT}{}",
                    request.method,
                    show(&request.url),
                    request.content_type,
                    show(&request.body)
                )
            }
            Action::Command(command) => {
                let argv: Vec<String> = command.argv.iter().map(|a| command.secret_refs.show(a)).collect();
                format!(
                    "run {} (timeout {} ms{})",
                    serde_json::to_string(&argv).unwrap_or_default(),
                    command.timeout_ms,
                    if command.stdin.is_some() {
                        ", event on stdin"
                    } else {
                        ""
                    }
                )
            }
            Action::Nats(publish) => format!(
                "nats {} subject {} (stream {}, Nats-Msg-Id {}){INDENT}{}",
                publish.server.url, publish.subject, publish.stream.name, publish.msg_id, publish.body
            ),
            Action::Mqtt(publish) => format!(
                "mqtt {} topic {} (QoS 1){INDENT}{}",
                publish.server.url, publish.topic, publish.body
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub body: String,
    /// The secrets whose placeholders `url`, `headers` and `body` hold, read when sent.
    #[serde(default, skip_serializing_if = "SecretRefs::is_empty")]
    pub secret_refs: SecretRefs,
    /// Where each signing secret (`whsec_...`, checked at load) is read when sent;
    /// none for an unsigned request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing: Vec<SecretSource>,
    /// Signing secrets themselves, as jobs stored them before `signing`: read from
    /// such jobs, never written.
    #[serde(default, alias = "secret", deserialize_with = "secrets_of", skip_serializing)]
    pub secrets: Vec<String>,
    /// CA certificates (PEM) trusted besides the system's, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default = "yes")]
    pub ordered: bool,
    /// The preset that made the body, for answers only it explains (Zammad's
    /// "already exists").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
}

fn default_concurrency() -> u32 {
    4
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub stdin: Option<String>,
    pub timeout_ms: u64,
    /// The secrets whose placeholders `argv` and `env` hold, read when it runs.
    #[serde(default, skip_serializing_if = "SecretRefs::is_empty")]
    pub secret_refs: SecretRefs,
}

/// A checked webhook, templates compiled.
#[derive(Debug, Clone)]
pub struct Webhook {
    method: String,
    /// `scheme://host[:port]`, fixed.
    origin: String,
    /// The same as `url` serializes an origin, to compare rendered URLs with.
    origin_serialized: String,
    /// The rest of the URL, percent-encoding template.
    rest: TemplateRef,
    headers: Vec<(String, TemplateRef)>,
    body: Body,
    /// The secrets the templates above stand for (`__secret_N` is slot N).
    slots: Vec<SecretSlot>,
    /// Where each signing secret is read.
    signing: Vec<SecretSource>,
    /// The signing secrets written literally, by index in `signing` (`None` for a
    /// reference): what [`SecretSource::Rule`] finds.
    pub(super) literal_keys: Vec<Option<String>>,
    ca_file: Option<PathBuf>,
    /// What `check` should say about this webhook (it loads all the same).
    pub(super) warnings: Vec<String>,
    /// Its preset, if any.
    pub(super) preset: Option<Preset>,
    timeout: Duration,
    retry: RetryPolicy,
    concurrency: u32,
    ordered: bool,
}

#[derive(Debug, Clone)]
enum Body {
    Event,
    Json(TemplateRef),
    JsonValue(JsonTemplate),
    Form(Vec<(String, TemplateRef)>),
    Text(TemplateRef),
    Zammad { user: Option<TemplateRef> },
    Chat { preset: Preset, text: TemplateRef },
}

/// A JSON value whose strings are templates.
#[derive(Debug, Clone)]
enum JsonTemplate {
    Fixed(serde_json::Value),
    Text(TemplateRef),
    /// `{{ expression }}` alone: rendered as JSON, keeps its type.
    Value(TemplateRef),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl Webhook {
    /// Checks `config` of rule `rule`, compiling its templates into `templates`; its
    /// secrets are read once now (to fail here) and stand as placeholders.
    pub fn build(
        config: &WebhookConfig,
        rule: &str,
        templates: &mut Templates,
        secrets: &mut Secrets,
    ) -> Result<Webhook, String> {
        let (origin, rest) = split_origin(&config.url)?;
        if origin.contains("{{") || origin.contains("{%") {
            return Err(format!(
                "url: templates may appear only in the path and query, not in {origin:?} (scheme and host are fixed)"
            ));
        }
        if origin.contains("${") {
            return Err(format!(
                "url: secrets may appear only in the path and query, not in {origin:?} (put credentials in a header)"
            ));
        }
        let mut slots = Vec::new();
        let mut rest = secrets.reference(&rest, Encoding::Url, &mut slots)?;
        if let Some(first) = slots.first_mut()
            && !rest.starts_with(['/', '?', '#'])
        {
            // `https://host${env:PATH}`: the path is the secret; the `/` is written here.
            first.encoding = Encoding::UrlAfterHost;
            rest.insert(0, '/');
        }
        let parsed = url::Url::parse(&format!("{origin}/")).map_err(|e| format!("url: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("url: scheme {:?} is not http or https", parsed.scheme()));
        }
        let method = config
            .method
            .clone()
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        if !["POST", "PUT", "PATCH", "GET", "DELETE"].contains(&method.as_str()) {
            return Err(format!(
                "method: {method:?} is not one of POST, PUT, PATCH, GET, DELETE"
            ));
        }
        let headers = build_headers(&config.headers, templates, secrets, &mut slots)?;
        let body = build_body(config, templates, secrets, &mut slots)?;
        let (signing, literal_keys, warnings) = build_signing(config, rule, secrets)?;
        let ca_file = config
            .ca_file
            .as_ref()
            .map(|path| ca_file::check(&secrets.base().join(path)))
            .transpose()?;
        let timeout = config
            .timeout
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .unwrap_or(Duration::from_secs(15));
        let retry = config
            .retry
            .as_ref()
            .map(RetryPolicy::build)
            .transpose()?
            .unwrap_or_default();
        let concurrency = config.concurrency.unwrap_or(4);
        if concurrency == 0 {
            return Err("concurrency: must be at least 1".into());
        }
        Ok(Webhook {
            retry,
            concurrency,
            ordered: config.ordered.unwrap_or(true),
            method,
            origin_serialized: parsed.origin().ascii_serialization(),
            origin,
            rest: templates.add(&rest, Escape::Url).map_err(|e| format!("url: {e}"))?,
            headers,
            body,
            slots,
            signing,
            literal_keys,
            ca_file,
            warnings,
            preset: config.preset,
            timeout,
        })
    }

    /// The request for `view`'s event (whose JSON is made once for all the rules).
    pub(crate) fn render(&self, templates: &Templates, context: &Value, view: &EventView) -> Result<Action, String> {
        let event = view.event;
        let secret_refs = SecretRefs::fresh(&self.slots)?;
        let context = &with_secrets(context, &secret_refs);
        let rest = templates.render(&self.rest, context).map_err(|e| format!("url: {e}"))?;
        let url = format!("{}{}", self.origin, rest);
        // The rendered part is percent-encoded, so this cannot fail to keep the origin;
        // checked anyway, as the promise is that no event can redirect a webhook.
        let parsed = url::Url::parse(&url).map_err(|e| format!("url: {e}"))?;
        if parsed.origin().ascii_serialization() != self.origin_serialized {
            return Err("url: rendered URL changes scheme or host".into());
        }
        let mut headers = Vec::new();
        for (name, template) in &self.headers {
            let value = templates
                .render(template, context)
                .map_err(|e| format!("headers.{name}: {e}"))?;
            headers.push((name.clone(), ascii_header_value(&value)));
        }
        if let Some(preset) = self.preset {
            for (name, value) in presets::default_headers(preset, event) {
                if !headers.iter().any(|(written, _)| written.eq_ignore_ascii_case(name)) {
                    headers.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        let (content_type, body) = self.render_body(templates, context, view)?;
        Ok(Action::Webhook(WebhookRequest {
            method: self.method.clone(),
            url,
            headers,
            content_type: content_type.to_owned(),
            body,
            secret_refs,
            signing: self.signing.clone(),
            secrets: Vec::new(),
            ca_file: self.ca_file.clone(),
            timeout_ms: self.timeout.as_millis() as u64,
            retry: self.retry,
            concurrency: self.concurrency,
            ordered: self.ordered,
            preset: self.preset,
        }))
    }

    /// (content type, body) for `event`.
    fn render_body(
        &self,
        templates: &Templates,
        context: &Value,
        view: &EventView,
    ) -> Result<(&'static str, String), String> {
        let event = view.event;
        Ok(match &self.body {
            Body::Event => ("application/json", view.json()),
            Body::Json(template) => {
                let body = templates.render(template, context).map_err(|e| format!("body: {e}"))?;
                serde_json::from_str::<serde_json::Value>(&body).map_err(|e| format!("body is not JSON: {e}"))?;
                ("application/json", body)
            }
            Body::JsonValue(template) => (
                "application/json",
                render_json(template, templates, context)?.to_string(),
            ),
            Body::Form(fields) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (name, template) in fields {
                    form.append_pair(
                        name,
                        &templates
                            .render(template, context)
                            .map_err(|e| format!("form.{name}: {e}"))?,
                    );
                }
                ("application/x-www-form-urlencoded", form.finish())
            }
            Body::Text(template) => (
                "text/plain; charset=utf-8",
                templates.render(template, context).map_err(|e| format!("text: {e}"))?,
            ),
            Body::Zammad { user } => {
                let user = user.as_ref().map(|u| templates.render(u, context)).transpose()?;
                (
                    "application/x-www-form-urlencoded",
                    presets::zammad_cti(event, user.as_deref()),
                )
            }
            Body::Chat { preset, text } => {
                let text = templates.render(text, context).map_err(|e| format!("text: {e}"))?;
                presets::chat_body(*preset, &text)
            }
        })
    }
}

/// Header names that callhook sets itself and a rule may not.
const OWN_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

/// The template context with the placeholders of this rendering's secrets.
fn with_secrets(context: &Value, secret_refs: &SecretRefs) -> Value {
    if secret_refs.is_empty() {
        return context.clone();
    }
    minijinja::value::merge_maps([secret_refs.variables(), context.clone()])
}

/// Where each signing secret is read, the literal ones, and warnings about the keys.
#[allow(clippy::type_complexity)]
fn build_signing(
    config: &WebhookConfig,
    rule: &str,
    secrets: &mut Secrets,
) -> Result<(Vec<SecretSource>, Vec<Option<String>>, Vec<String>), String> {
    let (mut signing, mut literal_keys, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    for (index, secret) in config.secret.iter().flat_map(OneOrMany::items).enumerate() {
        let at = if matches!(config.secret, Some(OneOrMany::Many(_))) {
            format!("secret[{index}]")
        } else {
            "secret".to_owned()
        };
        let (source, value, literal) = match secrets.whole(secret).map_err(|e| format!("{at}: {e}"))? {
            Some((source, value)) => (source, value, None),
            None => (
                SecretSource::Rule {
                    rule: rule.to_owned(),
                    index,
                },
                secret.clone(),
                Some(secret.clone()),
            ),
        };
        let key = secret::decode_secret(&value).map_err(|e| format!("{at}: {e}"))?;
        warnings.extend(secret::key_warning(&key).map(|w| format!("webhook.{at}: {w}")));
        signing.push(source);
        literal_keys.push(literal);
    }
    Ok((signing, literal_keys, warnings))
}

fn build_headers(
    written: &BTreeMap<String, String>,
    templates: &mut Templates,
    secrets: &mut Secrets,
    slots: &mut Vec<SecretSlot>,
) -> Result<Vec<(String, TemplateRef)>, String> {
    let mut headers = Vec::new();
    for (name, value) in written {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("headers: {name:?} is not a valid header name"));
        }
        if OWN_HEADERS.iter().any(|own| own.eq_ignore_ascii_case(name)) {
            return Err(format!(
                "headers.{name}: set by callhook for Standard Webhooks (give `secret:` to sign)"
            ));
        }
        let value = secrets
            .reference(value, Encoding::Raw, slots)
            .map_err(|e| format!("headers.{name}: {e}"))?;
        if !value.is_ascii() {
            return Err(format!("headers.{name}: header values must be ASCII"));
        }
        headers.push((
            name.clone(),
            templates
                .add(&value, Escape::Text)
                .map_err(|e| format!("headers.{name}: {e}"))?,
        ));
    }
    Ok(headers)
}

/// A rendered header value as visible ASCII: anything else (caller ID's UTF-8, line
/// breaks) percent-encoded, so a value can neither break the header nor be read
/// differently by a receiver that takes header bytes as Latin-1.
fn ascii_header_value(value: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(value, KEEP).collect()
}

fn build_body(
    config: &WebhookConfig,
    templates: &mut Templates,
    secrets: &mut Secrets,
    slots: &mut Vec<SecretSlot>,
) -> Result<Body, String> {
    let given = [
        config.body.is_some(),
        config.json.is_some(),
        config.form.is_some(),
        config.text.is_some() && config.preset.is_none(),
    ];
    if given.iter().filter(|b| **b).count() > 1 || (config.preset.is_some() && given.iter().any(|b| *b)) {
        return Err("give one of preset, body, json, form or text".into());
    }
    if config.user.is_some() && config.preset != Some(Preset::ZammadCti) {
        return Err("user: only for preset zammad_cti".into());
    }
    Ok(match (&config.preset, &config.body, &config.json, &config.form) {
        (Some(Preset::ZammadCti), ..) => {
            if config.text.is_some() {
                return Err("text: not used by preset zammad_cti".into());
            }
            Body::Zammad {
                user: config
                    .user
                    .as_deref()
                    .map(|u| templates.add(u, Escape::Text))
                    .transpose()?,
            }
        }
        (Some(preset), ..) if preset.is_chat() => Body::Chat {
            preset: *preset,
            text: templates
                .add(
                    config.text.as_deref().unwrap_or(presets::CHAT_TEXT),
                    Escape::Chat(preset.escape()),
                )
                .map_err(|e| format!("text: {e}"))?,
        },
        (Some(_), ..) => Body::Event,
        (_, Some(body), ..) => Body::Json(
            templates
                .add(&secrets.reference(body, Encoding::Json, slots)?, Escape::Json)
                .map_err(|e| format!("body: {e}"))?,
        ),
        (_, _, Some(json), _) => Body::JsonValue(json_template(json, templates, secrets, slots)?),
        (_, _, _, Some(form)) => Body::Form(
            form.iter()
                .map(|(k, v)| {
                    let source = secrets.reference(v, Encoding::Form, slots)?;
                    Ok((k.clone(), templates.add(&source, Escape::Text)?))
                })
                .collect::<Result<_, String>>()?,
        ),
        _ => match &config.text {
            Some(text) => Body::Text(
                templates
                    .add(&secrets.reference(text, Encoding::Raw, slots)?, Escape::Text)
                    .map_err(|e| format!("text: {e}"))?,
            ),
            None => Body::Event,
        },
    })
}

/// Whether `text` is one `{{ expression }}` and nothing else.
fn single_expression(text: &str) -> bool {
    let text = text.trim();
    text.strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .is_some_and(|inner| !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"))
}

fn json_template(
    value: &serde_json::Value,
    templates: &mut Templates,
    secrets: &mut Secrets,
    slots: &mut Vec<SecretSlot>,
) -> Result<JsonTemplate, String> {
    Ok(match value {
        serde_json::Value::String(s) if single_expression(s) => JsonTemplate::Value(
            templates
                .add(&secrets.reference(s, Encoding::Json, slots)?, Escape::Json)
                .map_err(|e| format!("json: {e}"))?,
        ),
        // A string of the body: its secrets are written escaped for a JSON string.
        serde_json::Value::String(s) => JsonTemplate::Text(
            templates
                .add(&secrets.reference(s, Encoding::Json, slots)?, Escape::Text)
                .map_err(|e| format!("json: {e}"))?,
        ),
        serde_json::Value::Array(items) => JsonTemplate::Array(
            items
                .iter()
                .map(|i| json_template(i, templates, secrets, slots))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => JsonTemplate::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), json_template(v, templates, secrets, slots)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => JsonTemplate::Fixed(other.clone()),
    })
}

fn render_json(template: &JsonTemplate, templates: &Templates, context: &Value) -> Result<serde_json::Value, String> {
    Ok(match template {
        JsonTemplate::Fixed(v) => v.clone(),
        JsonTemplate::Text(t) => {
            serde_json::Value::String(templates.render(t, context).map_err(|e| format!("json: {e}"))?)
        }
        JsonTemplate::Value(t) => {
            // Rendered with JSON escaping, so the output is one JSON value.
            let text = templates.render(t, context).map_err(|e| format!("json: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("json: {text:?} is not a JSON value: {e}"))?
        }
        JsonTemplate::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|i| render_json(i, templates, context))
                .collect::<Result<_, _>>()?,
        ),
        JsonTemplate::Object(fields) => serde_json::Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, templates, context)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Splits `https://host:port/path?q` into `https://host:port` and `/path?q`.
fn split_origin(url: &str) -> Result<(String, String), String> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| format!("url: {url:?} has no scheme (https://...)"))?;
    let after = &url[scheme_end + 3..];
    // A secret may follow the host at once: `https://hooks.slack.com${env:PATH}`.
    let host_end = after
        .find(['/', '?', '#'])
        .into_iter()
        .chain(after.find("${"))
        .min()
        .unwrap_or(after.len());
    let (origin, rest) = url.split_at(scheme_end + 3 + host_end);
    Ok((origin.to_owned(), rest.to_owned()))
}

/// A checked command.
#[derive(Debug, Clone)]
pub struct Command {
    argv: Vec<TemplateRef>,
    env: Vec<(String, TemplateRef)>,
    /// The secrets the templates above stand for.
    slots: Vec<SecretSlot>,
    cwd: Option<PathBuf>,
    stdin: bool,
    timeout: Duration,
}

impl Command {
    pub fn build(config: &RunConfig, templates: &mut Templates, secrets: &mut Secrets) -> Result<Command, String> {
        if config.argv.is_empty() {
            return Err("argv: needs the program at least".into());
        }
        if config.argv[0].contains("{{") || config.argv[0].contains("{%") || config.argv[0].contains("${") {
            return Err("argv[0]: the program cannot be a template or a secret".into());
        }
        let mut slots = Vec::new();
        let argv = config
            .argv
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let source = secrets
                    .reference(a, Encoding::Raw, &mut slots)
                    .map_err(|e| format!("argv[{i}]: {e}"))?;
                templates
                    .add(&source, Escape::Text)
                    .map_err(|e| format!("argv[{i}]: {e}"))
            })
            .collect::<Result<_, String>>()?;
        let env = config
            .env
            .iter()
            .map(|(k, v)| {
                let source = secrets
                    .reference(v, Encoding::Raw, &mut slots)
                    .map_err(|e| format!("env.{k}: {e}"))?;
                Ok((
                    k.clone(),
                    templates
                        .add(&source, Escape::Text)
                        .map_err(|e| format!("env.{k}: {e}"))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        let timeout = config
            .timeout
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .unwrap_or(Duration::from_secs(10));
        Ok(Command {
            argv,
            env,
            slots,
            cwd: config.cwd.clone(),
            stdin: config.stdin,
            timeout,
        })
    }

    pub(crate) fn render(&self, templates: &Templates, context: &Value, event: &Event) -> Result<Action, String> {
        let secret_refs = SecretRefs::fresh(&self.slots)?;
        let context = &with_secrets(context, &secret_refs);
        let argv = self
            .argv
            .iter()
            .enumerate()
            .map(|(i, t)| templates.render(t, context).map_err(|e| format!("argv[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut env = event_env(event);
        for (name, template) in &self.env {
            env.push((
                name.clone(),
                templates
                    .render(template, context)
                    .map_err(|e| format!("env.{name}: {e}"))?,
            ));
        }
        if argv.iter().chain(env.iter().map(|(_, v)| v)).any(|a| a.contains('\0')) {
            return Err("argv/env: a value holds a NUL byte".into());
        }
        Ok(Action::Command(CommandSpec {
            argv,
            env,
            cwd: self.cwd.clone(),
            stdin: self.stdin.then(|| event.to_json()),
            timeout_ms: self.timeout.as_millis() as u64,
            secret_refs,
        }))
    }
}

/// The event as `CALLHOOK_*` environment variables (absent fields are empty).
pub(crate) fn event_env(event: &Event) -> Vec<(String, String)> {
    let json = serde_json::to_value(event).unwrap_or_default();
    crate::rules::matcher::FIELD_NAMES
        .iter()
        .map(|name| {
            let value = match json.get(*name) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (format!("CALLHOOK_{}", name.to_ascii_uppercase()), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Action, CommandSpec, Preset, RetryPolicy, WebhookRequest};

    /// The webhook shortcut of [`Action::from_json`] reads what the general way reads,
    /// and other kinds still go the general way.
    #[test]
    fn actions_read_back_as_written() {
        let webhook = Action::Webhook(WebhookRequest {
            method: "POST".into(),
            url: "https://crm.example/hook".into(),
            headers: vec![("x-desk".into(), "7".into())],
            content_type: "application/json".into(),
            body: "{\"type\":\"ringing\",\"note\":\"a \\\"quote\\\"\"}".into(),
            secret_refs: Default::default(),
            signing: Vec::new(),
            secrets: Vec::new(),
            ca_file: None,
            timeout_ms: 15_000,
            retry: RetryPolicy::default(),
            concurrency: 16,
            ordered: false,
            preset: Some(Preset::Generic),
        });
        let command = Action::Command(CommandSpec {
            argv: vec!["notify-send".into()],
            env: Vec::new(),
            cwd: None,
            stdin: None,
            timeout_ms: 1_000,
            secret_refs: Default::default(),
        });
        for action in [webhook, command] {
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(Action::from_json(&json).unwrap(), action);
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), action);
        }
        assert!(Action::from_json("{\"kind\":\"webhook\",\"url\":1}").is_err());
    }

    /// A webhook's body stored apart goes back into it; a job stored with its body in
    /// the JSON (before bodies were kept apart) keeps that one.
    #[test]
    fn a_body_stored_apart_goes_back_in() {
        let json = r#"{"kind":"webhook","method":"POST","url":"http://h/","headers":[],"content_type":"text/plain","body":"old","timeout_ms":1}"#;
        let body = |action: Action| match action {
            Action::Webhook(request) => request.body,
            other => panic!("{other:?}"),
        };
        assert_eq!(body(Action::from_stored(json, None).unwrap()), "old");
        assert_eq!(
            body(Action::from_stored(json, Some("new \"x\"".into())).unwrap()),
            "new \"x\""
        );
    }
}
