//! The configuration file: YAML in, a checked [`Config`] out.
//!
//! `ConfigFile` is what was written (plain serde, unknown keys rejected, every field
//! documented here as the reference); [`Config::load`] reads it and builds `Config`,
//! checking every value once (durations, time zones, paths), so the running daemon
//! never meets a bad value. Errors name the file, line and column.
//!
//! ```yaml
//! version: 1
//! state_dir: ./state            # default: "state" next to this file
//! sources:
//!   - kind: sip_trace
//!     path: C:/Users/me/AppData/Local/MicroSIP/MicroSIP_log.txt
//!     start_at: end             # end (default) | beginning
//!     poll_interval: 250ms      # default 250ms
//!   - kind: hook                # `callhook hook` messages (no path)
//! correlate:
//!   window: 10s                 # same number within this: one call (no Call-ID)
//!   wait: 300ms                 # poorer sources wait this long for the trace
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_saphyr::Spanned;
use thiserror::Error;

use crate::parse::call_log::ColumnMapping;
use crate::rules::RuleSet;
use crate::rules::config::{self as rules_config, RuleConfig, RulesFile, RulesSource, suggest};

/// The configuration file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Format version of this file; must be 1.
    pub version: u32,
    /// Folder of the state database; relative paths are relative to this file's folder.
    /// Default: `state` next to this file.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The files to watch.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// What to do on which events (see the README's rule reference).
    #[serde(default)]
    pub rules: Vec<Spanned<RuleConfig>>,
    /// How events of several sources about one call are merged (see the README).
    #[serde(default)]
    pub correlate: Option<CorrelateConfig>,
    /// More rule files: paths, or folders (every `*.yaml`/`*.yml` in them, by name),
    /// relative to this file. They hold `rules:` (and optionally `version: 1`) only.
    #[serde(default)]
    pub include: Vec<PathBuf>,
}

/// `correlate:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelateConfig {
    /// How far apart in time events of one number may be and still be one call, when a
    /// source knows no Call-ID (default `10s`; `0s`: by call id only).
    #[serde(default)]
    pub window: Option<String>,
    /// How long an event of a poorer source (hook, history, call log) waits for the same
    /// event from a richer one (default: the richest source's poll interval + 50ms;
    /// `0s`: emit at once, whichever comes first).
    #[serde(default)]
    pub wait: Option<String>,
}

/// One watched file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// What the file is: `sip_trace` (MicroSIP's `MicroSIP_log.txt`, a PJSIP log),
    /// `call_log` (a call-log CSV: state rows or MicroSIP history-export rows), or
    /// `history` (MicroSIP's `microsip.ini`, whose `[Calls]` it rewrites on each change),
    /// or `hook` (messages from `callhook hook`, which MicroSIP's `cmd...` settings start).
    pub kind: SourceKindConfig,
    /// The file; relative paths are relative to this file's folder. It need not exist yet.
    /// Not for `hook` (its messages come over loopback or through `state_dir/hook-spool`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `hook` only: the loopback address to listen on (default `127.0.0.1:0`, any free
    /// port; the port chosen is written to `state_dir/hook.addr` for `callhook hook`).
    #[serde(default)]
    pub listen: Option<String>,
    /// Where to start in a file seen for the first time: `end` (default: old calls are not
    /// replayed) or `beginning`. Ignored once a checkpoint exists.
    #[serde(default)]
    pub start_at: StartAt,
    /// How often to look at the file even without a change notification, e.g. `250ms`,
    /// `1s` (default `250ms`). Windows sends no notifications while MicroSIP holds the
    /// log open, so this bounds the delay there.
    #[serde(default)]
    pub poll_interval: Option<String>,
    /// IANA time zone of the trace's local times (default: this machine's).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Take an inbound caller's number and name from P-Asserted-Identity or
    /// Remote-Party-ID when present (behind a PBX that sets them). Default false.
    #[serde(default)]
    pub prefer_asserted_identity: bool,
    /// `call_log` only: header names to use instead of the aliases, e.g.
    /// `{ number: Rufnummer, time: Zeit }`.
    #[serde(default)]
    pub columns: Option<ColumnMapping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKindConfig {
    SipTrace,
    CallLog,
    /// MicroSIP's `microsip.ini` (its `[Calls]` section), rewritten in place.
    History,
    /// Messages from `callhook hook` (MicroSIP's command hooks).
    Hook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    End,
    Beginning,
}

/// Default poll interval.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub sources: Vec<Source>,
    pub rules: Arc<RuleSet>,
    /// Every file the configuration was read from (to watch them for changes).
    pub files: Vec<PathBuf>,
    /// `correlate.window`.
    pub correlation_window: Duration,
    /// `correlate.wait`; `None`: see [`Config::correlation_wait`].
    pub correlation_wait: Option<Duration>,
}

impl Config {
    /// A configuration without rules (quick start, tests).
    pub fn with_sources(state_dir: impl Into<PathBuf>, sources: Vec<Source>) -> Config {
        Config {
            state_dir: state_dir.into(),
            sources,
            rules: Arc::new(RuleSet::empty()),
            files: Vec::new(),
            correlation_window: crate::correlate::DEFAULT_WINDOW,
            correlation_wait: None,
        }
    }
}

impl Config {
    /// How long events of poorer sources wait for a richer one: `correlate.wait`, else
    /// the richest source's poll interval and 50ms (its events are seen within one poll).
    pub fn correlation_wait(&self) -> Duration {
        self.correlation_wait.unwrap_or_else(|| {
            self.sources
                .iter()
                .min_by_key(|s| crate::correlate::rank(s.kind.event_source()))
                .map_or(Duration::ZERO, |s| s.poll_interval + Duration::from_millis(50))
        })
    }
}

impl SourceKindConfig {
    /// The `source` its events carry.
    pub fn event_source(self) -> crate::event::SourceKind {
        use crate::event::SourceKind;
        match self {
            SourceKindConfig::SipTrace => SourceKind::SipTrace,
            SourceKindConfig::CallLog => SourceKind::CallLog,
            SourceKindConfig::History => SourceKind::History,
            SourceKindConfig::Hook => SourceKind::Hook,
        }
    }
}

/// A checked source.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: SourceKindConfig,
    pub path: PathBuf,
    pub start_at: StartAt,
    pub poll_interval: Duration,
    pub time_zone: TimeZone,
    pub prefer_asserted_identity: bool,
    /// `call_log`: header names overriding the aliases.
    pub columns: ColumnMapping,
    /// `hook`: where to listen (loopback).
    pub listen: SocketAddr,
}

/// Where a `hook` source listens unless told otherwise: loopback, any free port.
pub const DEFAULT_HOOK_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl Source {
    /// A SIP trace source with the defaults.
    pub fn sip_trace(path: impl Into<PathBuf>) -> Source {
        Source {
            kind: SourceKindConfig::SipTrace,
            path: path.into(),
            start_at: StartAt::End,
            poll_interval: DEFAULT_POLL_INTERVAL,
            time_zone: TimeZone::system(),
            prefer_asserted_identity: false,
            columns: ColumnMapping::default(),
            listen: DEFAULT_HOOK_LISTEN,
        }
    }

    /// A hook source with the defaults; its messages are spooled in `state_dir`.
    pub fn hook(state_dir: &Path) -> Source {
        Source {
            kind: SourceKindConfig::Hook,
            ..Source::sip_trace(crate::source::hook_inbox::Inbox::new(state_dir).spool_dir())
        }
    }

    /// A call-log CSV source with the defaults.
    pub fn call_log(path: impl Into<PathBuf>) -> Source {
        Source {
            kind: SourceKindConfig::CallLog,
            ..Source::sip_trace(path)
        }
    }

    /// The name of this source's checkpoint in the state database.
    pub fn key(&self) -> String {
        match self.kind {
            // One hook source per state directory.
            SourceKindConfig::Hook => crate::source::hook::HOOK_SOURCE_KEY.to_owned(),
            kind => format!("{}:{}", kind.event_source().as_str(), self.path.display()),
        }
    }
}

/// The configuration could not be loaded; lists every problem found.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {}", .problems.join("\n  "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text, path)
    }

    /// Checks configuration text; `path` names it in errors and anchors relative paths.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: ConfigFile = serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: suggest(&e.to_string()),
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        };
        // Included rule files, read and parsed; their problems are reported together.
        let mut included = Vec::new();
        let mut problems = Vec::new();
        for include in &file.include {
            for rule_file in expand_include(&base.join(include)).map_err(|e| invalid(vec![e]))? {
                let parsed = std::fs::read_to_string(&rule_file)
                    .map_err(|e| format!("{}: cannot read: {e}", rule_file.display()))
                    .and_then(|text| {
                        serde_saphyr::from_str::<RulesFile>(&text)
                            .map_err(|e| format!("{}: {}", rule_file.display(), suggest(&e.to_string())))
                    });
                match parsed {
                    Ok(rules) => included.push((rule_file, rules)),
                    Err(problem) => problems.push(problem),
                }
            }
        }
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let mut sources = vec![RulesSource {
            path,
            rules: &file.rules,
        }];
        sources.extend(included.iter().map(|(p, r)| RulesSource {
            path: p,
            rules: &r.rules,
        }));
        let rules = rules_config::build(&sources, &base);
        let files: Vec<PathBuf> = std::iter::once(path.to_owned())
            .chain(included.iter().map(|(p, _)| p.clone()))
            .collect();
        let mut config = file.build(&base).map_err(|mut problems| {
            if let Err(more) = &rules {
                problems.extend(more.iter().cloned());
            }
            invalid(problems)
        })?;
        config.rules = Arc::new(rules.map_err(invalid)?);
        config.files = files;
        Ok(config)
    }
}

/// The rule files an `include:` entry names: the file, or a folder's YAML files by name.
fn expand_include(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("include {}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        Ok(files)
    } else if path.is_file() {
        Ok(vec![path.to_owned()])
    } else {
        Err(format!("include {}: no such file or folder", path.display()))
    }
}

impl ConfigFile {
    /// Checks every value; relative paths are taken relative to `base`.
    pub fn build(self, base: &Path) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        if self.version != 1 {
            problems.push(format!(
                "version: {} is not supported (this callhook reads version 1)",
                self.version
            ));
        }
        let state_dir = base.join(self.state_dir.unwrap_or_else(|| PathBuf::from("state")));
        let mut sources = Vec::new();
        for (index, source) in self.sources.into_iter().enumerate() {
            let at = format!("sources[{index}]");
            let poll_interval = match &source.poll_interval {
                None => DEFAULT_POLL_INTERVAL,
                Some(text) => match parse_duration(text) {
                    Ok(d) if d >= Duration::from_millis(10) => d,
                    Ok(_) => {
                        problems.push(format!("{at}.poll_interval: {text:?} is too short (at least 10ms)"));
                        DEFAULT_POLL_INTERVAL
                    }
                    Err(e) => {
                        problems.push(format!("{at}.poll_interval: {e}"));
                        DEFAULT_POLL_INTERVAL
                    }
                },
            };
            let time_zone = match &source.time_zone {
                None => TimeZone::system(),
                Some(name) => TimeZone::get(name).unwrap_or_else(|e| {
                    problems.push(format!("{at}.time_zone: unknown time zone {name:?}: {e}"));
                    TimeZone::UTC
                }),
            };
            if source.columns.is_some() && source.kind != SourceKindConfig::CallLog {
                problems.push(format!("{at}.columns: only a call_log source has columns"));
            }
            let is_hook = source.kind == SourceKindConfig::Hook;
            let listen = match (&source.listen, is_hook) {
                (None, _) => DEFAULT_HOOK_LISTEN,
                (Some(_), false) => {
                    problems.push(format!("{at}.listen: only a hook source listens"));
                    DEFAULT_HOOK_LISTEN
                }
                (Some(text), true) => match text.parse::<SocketAddr>() {
                    Ok(address) if address.ip().is_loopback() => address,
                    Ok(address) => {
                        problems.push(format!(
                            "{at}.listen: {address} is not a loopback address; hooks come from this machine only (use 127.0.0.1:PORT)"
                        ));
                        DEFAULT_HOOK_LISTEN
                    }
                    Err(e) => {
                        problems.push(format!(
                            "{at}.listen: {text:?} is not an address like 127.0.0.1:7878: {e}"
                        ));
                        DEFAULT_HOOK_LISTEN
                    }
                },
            };
            let path = match (&source.path, is_hook) {
                (Some(path), false) => base.join(path),
                (None, true) => crate::source::hook_inbox::Inbox::new(&state_dir).spool_dir(),
                (Some(_), true) => {
                    problems.push(format!(
                        "{at}.path: a hook source has no path (its messages wait in state_dir/hook-spool)"
                    ));
                    PathBuf::new()
                }
                (None, false) => {
                    problems.push(format!(
                        "{at}.path: a {} source needs the path of its file",
                        source.kind.event_source().as_str()
                    ));
                    PathBuf::new()
                }
            };
            if is_hook && sources.iter().any(|s: &Source| s.kind == SourceKindConfig::Hook) {
                problems.push(format!("{at}: only one hook source per configuration"));
            }
            sources.push(Source {
                columns: source.columns.clone().unwrap_or_default(),
                kind: source.kind,
                path,
                listen,
                start_at: source.start_at,
                poll_interval,
                time_zone,
                prefer_asserted_identity: source.prefer_asserted_identity,
            });
        }
        if sources.is_empty() {
            problems.push("sources: at least one source is needed".to_owned());
        }
        let mut correlation_window = crate::correlate::DEFAULT_WINDOW;
        let mut correlation_wait = None;
        if let Some(correlate) = &self.correlate {
            if let Some(text) = &correlate.window {
                match parse_duration(text) {
                    Ok(window) => correlation_window = window,
                    Err(e) => problems.push(format!("correlate.window: {e}")),
                }
            }
            if let Some(text) = &correlate.wait {
                match parse_duration(text) {
                    Ok(wait) if wait <= Duration::from_secs(60) => correlation_wait = Some(wait),
                    Ok(_) => problems.push(format!("correlate.wait: {text:?} is too long (at most 60s)")),
                    Err(e) => problems.push(format!("correlate.wait: {e}")),
                }
            }
        }
        if problems.is_empty() {
            let mut config = Config::with_sources(state_dir, sources);
            config.correlation_window = correlation_window;
            config.correlation_wait = correlation_wait;
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// The state directory a configuration file names, read leniently: only `state_dir` is
/// looked at, so `callhook hook` still finds the spool while the rules have a mistake.
/// When the file is not even YAML (half edited), a top-level `state_dir:` line is still
/// used, with a warning, so the hook's event is not lost.
pub fn state_dir_of(path: &Path) -> Result<PathBuf, ConfigError> {
    #[derive(Deserialize)]
    struct StateDirOnly {
        #[serde(default)]
        state_dir: Option<PathBuf>,
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let state_dir = match serde_saphyr::from_str::<StateDirOnly>(&text) {
        Ok(file) => file.state_dir,
        Err(error) => {
            let line = text.lines().find_map(|line| {
                let value = line.strip_prefix("state_dir:")?;
                let value = value.split(" #").next().unwrap_or(value).trim();
                Some(value.trim_matches(|c| c == '"' || c == '\'').to_owned())
                    .filter(|v| !v.is_empty() && !v.starts_with(['[', '{']))
            });
            match line {
                Some(value) => {
                    tracing::warn!("{}: not valid YAML ({error}); using its state_dir line", path.display());
                    Some(PathBuf::from(value))
                }
                None if !text.lines().any(|l| l.starts_with("state_dir")) => {
                    tracing::warn!(
                        "{}: not valid YAML ({error}); using the default state_dir",
                        path.display()
                    );
                    None
                }
                None => {
                    return Err(ConfigError::Syntax {
                        path: path.to_owned(),
                        message: error.to_string(),
                    });
                }
            }
        }
    };
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    Ok(base.join(state_dir.unwrap_or_else(|| PathBuf::from("state"))))
}

/// Reads a duration such as `250ms`, `5s`, `2m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 250ms, 5s or 2m: {e}"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_with_defaults() {
        let config = Config::from_yaml(
            "version: 1\nsources:\n  - kind: sip_trace\n    path: logs/MicroSIP_log.txt\n",
            Path::new("/etc/callhook/callhook.yaml"),
        )
        .unwrap();
        assert_eq!(config.state_dir, Path::new("/etc/callhook/state"));
        let source = &config.sources[0];
        assert_eq!(source.path, Path::new("/etc/callhook/logs/MicroSIP_log.txt"));
        assert_eq!(source.start_at, StartAt::End);
        assert_eq!(source.poll_interval, DEFAULT_POLL_INTERVAL);
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let error = Config::from_yaml(
            "version: 1\nsources:\n  - kind: sip_trace\n    path: x\n    poll_intervall: 1s\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("c.yaml: "), "{error}");
        assert!(error.contains("poll_intervall"), "{error}");
        assert!(error.contains("5:5") || error.contains("line 5"), "{error}");
    }

    #[test]
    fn all_value_problems_are_listed() {
        let error = Config::from_yaml(
            "version: 2\nsources:\n  - kind: sip_trace\n    path: x\n    poll_interval: soon\n    time_zone: Mars/Base\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        for needle in ["version: 2", "poll_interval", "Mars/Base"] {
            assert!(error.contains(needle), "{needle} in {error}");
        }
    }

    #[test]
    fn state_dir_is_found_in_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "version: 1\nstate_dir: \"st\"  # here\nrules: [oops\n").unwrap();
        assert_eq!(state_dir_of(&path).unwrap(), dir.path().join("st"));
        std::fs::write(&path, "version: 1\nrules:\n  - name: x\n    bogus: 1\n").unwrap();
        assert_eq!(state_dir_of(&path).unwrap(), dir.path().join("state"));
        std::fs::write(&path, "state_dir: [\n").unwrap();
        assert!(state_dir_of(&path).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
