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
//!     path: '%LOCALAPPDATA%\MicroSIP\MicroSIP_log.txt'  # %NAME%, ${env:NAME}, ~ expanded
//!     start_at: end             # end (default) | beginning
//!     poll_interval: 250ms      # default 250ms
//!   - kind: hook                # `callhook hook` messages (no path)
//! correlate:
//!   window: 10s                 # same number within this: one call (no Call-ID)
//!   wait: 300ms                 # poorer sources wait this long for the trace
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use thiserror::Error;

use crate::duration::parse_duration;
use crate::event::SourceKind;
use crate::problem::Problem;
use crate::rules::RuleSet;
use crate::rules::config::{self as rules_config, RuleConfig, RulesFile, RulesSource};
use crate::rules::phone::Region;
use crate::source::config::{Source, SourceConfig};
use crate::yaml::tree::Node;

mod read;

/// The configuration file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Format version of this file; must be 1.
    pub version: u32,
    /// Folder of the state database; relative paths are relative to this file's folder.
    /// Default: `state` next to this file. `%NAME%`, `${env:NAME}` and a leading `~` are
    /// expanded, as in a source's `path`.
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
    /// The local status page and metrics (off by default; see the README).
    #[serde(default)]
    pub status: Option<StatusFileConfig>,
    /// The region phone numbers without a country code are read in by the `e164`
    /// template filter: a two-letter country code (`US`, `DE`, `GB`) or a calling code
    /// (`49`). Default: none (only numbers written with `+` or a country code become
    /// E.164; others stay as they are).
    #[serde(default)]
    pub default_region: Option<Spanned<String>>,
    /// This desk's name in a fleet: `{desk}` in the subjects and topics of `nats` and
    /// `mqtt` actions (1 to 64 of letters, digits, `_`, `-`). Default: this machine's host
    /// name, made a safe token.
    #[serde(default)]
    pub desk: Option<Spanned<String>>,
    /// More rule files: paths, or folders (every `*.yaml`/`*.yml` in them, by name),
    /// relative to this file. They hold `rules:` (and optionally `version: 1`) only.
    #[serde(default)]
    pub include: Vec<PathBuf>,
}

/// `status:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusFileConfig {
    /// Where to serve the page, e.g. `127.0.0.1:8089`; a loopback address unless a
    /// `token` is set.
    pub listen: String,
    /// A secret every request must carry (`?token=` or `Authorization: Bearer`), e.g.
    /// `${env:CALLHOOK_STATUS_TOKEN}`; needed to listen beyond loopback.
    #[serde(default)]
    pub token: Option<String>,
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
    /// `status:`, when the page is on.
    pub status: Option<crate::status::StatusConfig>,
    /// `desk:`, or this machine's host name.
    pub desk: String,
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
            status: None,
            desk: crate::broker::default_desk(),
        }
    }
}

impl Config {
    /// How long events of poorer sources wait for a richer one: `correlate.wait`, else
    /// the richest source's poll interval and 50ms (its events are seen within one poll).
    pub(crate) fn correlation_wait(&self) -> Duration {
        self.correlation_wait.unwrap_or_else(|| {
            self.sources
                .iter()
                .filter(|s| s.kind.events().is_some())
                .min_by_key(|s| s.kind.events().map(crate::correlate::rank))
                .map_or(Duration::ZERO, |s| s.poll_interval + Duration::from_millis(50))
        })
    }
}

/// The configuration could not be loaded; lists every problem found.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Every problem of the file and its included rule files, each with its place.
    #[error("{path}: {}:\n  {}", crate::problem::summary(.problems), show(.problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

/// The problems one a line (`FILE:LINE:COL: MESSAGE`), as an error message shows them.
fn show(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n  ")
}

/// An included rule file: its path, text and what could be read of it.
type Included = (PathBuf, String, read::Read<RulesFile>);

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
    /// Every problem is found (YAML errors of each rule, each source and the rest of
    /// the file, then every value and template), each placed at its file, line and
    /// column with the lines around it.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let read::Read {
            file,
            rules,
            sources_failed,
            source_indexes,
            tree,
            mut problems,
        } = read::read::<ConfigFile>(text, path);
        let includes = file.as_ref().map(|f| f.include.clone()).unwrap_or_default();
        let included = read_includes(&base, path, &includes, &mut problems);
        let mut sources = vec![RulesSource {
            path,
            rules: &rules,
            tree: tree.as_ref(),
            text,
        }];
        sources.extend(included.iter().map(|(p, t, r)| RulesSource {
            path: p,
            rules: &r.rules,
            tree: r.tree.as_ref(),
            text: t,
        }));
        let place = |spanned: &Spanned<String>, what: &str, e: String| {
            let at = (spanned.referenced.line(), spanned.referenced.column());
            Problem::new(path, Some(at), format!("{what}: {e}"))
        };
        let region = match file.as_ref().and_then(|f| f.default_region.as_ref()) {
            None => None,
            Some(spanned) => Region::parse(&spanned.value)
                .map_err(|e| problems.push(place(spanned, "default_region", e)))
                .ok(),
        };
        let desk = match file.as_ref().and_then(|f| f.desk.as_ref()) {
            None => crate::broker::default_desk(),
            Some(desk) => crate::broker::desk_name(&desk.value).unwrap_or_else(|e| {
                problems.push(place(desk, "desk", e));
                "desk".to_owned()
            }),
        };
        let rules = rules_config::build_for_desk(&sources, &base, region, &desk).map_err(|more| problems.extend(more));
        let config = file.and_then(|file| {
            file.build(&base)
                .map_err(|found| {
                    let found = found
                        .into_iter()
                        .filter(|p| !(sources_failed && p.starts_with("sources: ")));
                    let found = found.map(|p| renumber_source(p, &source_indexes));
                    problems.extend(found.map(|p| locate_top(path, tree.as_ref(), p)));
                })
                .ok()
        });
        match (config, rules) {
            (Some(mut config), Ok(rules)) if problems.is_empty() => {
                config.rules = Arc::new(rules);
                config.files = std::iter::once(path.to_owned())
                    .chain(included.iter().map(|(p, _, _)| p.clone()))
                    .collect();
                config.desk = desk;
                Ok(config)
            }
            _ => Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: with_snippets(problems, path, text, &included),
            }),
        }
    }
}

/// Reads the rule files `include:` names (relative to `base`); problems go to
/// `problems`, the files that could be read are returned.
fn read_includes(base: &Path, path: &Path, includes: &[PathBuf], problems: &mut Vec<Problem>) -> Vec<Included> {
    let mut included = Vec::new();
    for include in includes {
        let files = match expand_include(&base.join(include)) {
            Ok(files) => files,
            Err(e) => {
                problems.push(Problem::new(path, None, e));
                continue;
            }
        };
        for rule_file in files {
            match std::fs::read_to_string(&rule_file) {
                Ok(text) => {
                    let mut read = read::read::<RulesFile>(&text, &rule_file);
                    problems.append(&mut read.problems);
                    included.push((rule_file, text, read));
                }
                Err(e) => problems.push(Problem::new(&rule_file, None, format!("cannot read: {e}"))),
            }
        }
    }
    included
}

/// `sources[i]...` of a problem, `i` counting the sources that were read, made the
/// index in the file (they differ when an earlier source could not be read).
fn renumber_source(message: String, indexes: &[usize]) -> String {
    let renumbered = message.strip_prefix("sources[").and_then(|rest| {
        let (index, rest) = rest.split_once(']')?;
        let in_file = indexes.get(index.parse::<usize>().ok()?)?;
        Some(format!("sources[{in_file}]{rest}"))
    });
    renumbered.unwrap_or(message)
}

/// A problem of the main file's top level (`sources[0].path: ...`), placed at the
/// value its leading path names when the file is YAML.
fn locate_top(path: &Path, tree: Option<&Node>, message: String) -> Problem {
    let at = tree.and_then(|t| t.locate(&message)).map(|n| (n.line, n.column));
    Problem::new(path, at, message)
}

/// The problems in reading order (file by file, top to bottom) with the lines around
/// each, cut from its file.
fn with_snippets(mut problems: Vec<Problem>, path: &Path, text: &str, included: &[Included]) -> Vec<Problem> {
    let file_index = |problem: &Problem| {
        std::iter::once(path)
            .chain(included.iter().map(|(p, _, _)| p.as_path()))
            .position(|p| p == problem.path)
            .unwrap_or(usize::MAX)
    };
    problems.sort_by_key(|problem| (file_index(problem), problem.at.unwrap_or((0, 0))));
    problems
        .into_iter()
        .map(|problem| {
            let text = if problem.path == path {
                Some(text)
            } else {
                included
                    .iter()
                    .find(|(p, _, _)| *p == problem.path)
                    .map(|(_, t, _)| t.as_str())
            };
            match text {
                Some(text) => problem.with_snippet(text),
                None => problem,
            }
        })
        .collect()
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
    /// Checks every value; relative paths are taken relative to `base`. Lists every
    /// problem found, not only the first.
    pub fn build(self, base: &Path) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        if self.version != 1 {
            problems.push(format!(
                "version: {} is not supported (this callhook reads version 1)",
                self.version
            ));
        }
        let state_dir = match self.state_dir.as_deref().map(crate::expand::path) {
            None => base.join("state"),
            Some(Ok(dir)) => base.join(dir),
            Some(Err(e)) => {
                problems.push(format!("state_dir: {e}"));
                base.join("state")
            }
        };
        let sources = build_sources(&self.sources, base, &state_dir, &mut problems);
        let (correlation_window, correlation_wait) = match &self.correlate {
            Some(correlate) => correlate.build(&mut problems),
            None => (crate::correlate::DEFAULT_WINDOW, None),
        };
        // Events from a broker were correlated by the desk that made them: the central
        // one joins them by call id only (two desks' calls from one number stay two),
        // unless `correlate.window` says otherwise.
        let correlation_window = match &self.correlate {
            Some(CorrelateConfig { window: Some(_), .. }) => correlation_window,
            _ if !sources.is_empty() && sources.iter().all(|s| s.kind.is_broker()) => Duration::ZERO,
            _ => correlation_window,
        };
        let status = self
            .status
            .as_ref()
            .and_then(|status| status.build(base, &mut problems));
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut config = Config::with_sources(state_dir, sources);
        config.correlation_window = correlation_window;
        config.correlation_wait = correlation_wait;
        config.status = status;
        Ok(config)
    }
}

/// Every source checked; at least one, at most one hook source.
fn build_sources(written: &[SourceConfig], base: &Path, state_dir: &Path, problems: &mut Vec<String>) -> Vec<Source> {
    let mut sources: Vec<Source> = Vec::new();
    for (index, source) in written.iter().enumerate() {
        if source.kind == SourceKind::Hook && sources.iter().any(|s| s.kind == SourceKind::Hook) {
            problems.push(format!("sources[{index}]: only one hook source per configuration"));
        }
        sources.push(source.build(index, base, state_dir, problems));
    }
    if sources.is_empty() {
        problems.push("sources: at least one source is needed".to_owned());
    }
    sources
}

impl StatusFileConfig {
    /// `status.listen` and `status.token`, checked: beyond loopback only with a token.
    fn build(&self, base: &Path, problems: &mut Vec<String>) -> Option<crate::status::StatusConfig> {
        let listen = match self.listen.parse::<std::net::SocketAddr>() {
            Ok(listen) => listen,
            Err(e) => {
                problems.push(format!(
                    "status.listen: {:?} is not an address like 127.0.0.1:8089: {e}",
                    self.listen
                ));
                return None;
            }
        };
        let token = match &self.token {
            None => None,
            Some(text) => match crate::rules::secret_ref::resolve_now(text, base) {
                Ok(token) if token.len() >= 16 => Some(token),
                Ok(_) => {
                    problems.push("status.token: at least 16 characters".to_owned());
                    return None;
                }
                Err(e) => {
                    problems.push(format!("status.token: {e}"));
                    return None;
                }
            },
        };
        if token.is_none() && !listen.ip().is_loopback() {
            problems.push(format!(
                "status.listen: {listen} is reachable from other machines; give a token (status.token), or listen on 127.0.0.1"
            ));
            return None;
        }
        Some(crate::status::StatusConfig { listen, token })
    }
}

impl CorrelateConfig {
    /// `correlate.window` and `correlate.wait`, checked.
    fn build(&self, problems: &mut Vec<String>) -> (Duration, Option<Duration>) {
        let mut window = crate::correlate::DEFAULT_WINDOW;
        let mut wait = None;
        if let Some(text) = &self.window {
            match parse_duration(text) {
                Ok(parsed) => window = parsed,
                Err(e) => problems.push(format!("correlate.window: {e}")),
            }
        }
        if let Some(text) = &self.wait {
            match parse_duration(text) {
                Ok(parsed) if parsed <= Duration::from_secs(60) => wait = Some(parsed),
                Ok(_) => problems.push(format!("correlate.wait: {text:?} is too long (at most 60s)")),
                Err(e) => problems.push(format!("correlate.wait: {e}")),
            }
        }
        (window, wait)
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
            // `FILE:LINE:COL: message`: the file's own name, not serde-saphyr's `<input>`.
            let problem = read::yaml_problem(path, &error);
            let line = text.lines().find_map(|line| {
                let value = line.strip_prefix("state_dir:")?;
                let value = value.split(" #").next().unwrap_or(value).trim();
                Some(value.trim_matches(|c| c == '"' || c == '\'').to_owned())
                    .filter(|v| !v.is_empty() && !v.starts_with(['[', '{']))
            });
            match line {
                Some(value) => {
                    tracing::warn!("not valid YAML: {problem}; using its state_dir line");
                    Some(PathBuf::from(value))
                }
                None if !text.lines().any(|l| l.starts_with("state_dir")) => {
                    tracing::warn!("not valid YAML: {problem}; using the default state_dir");
                    None
                }
                None => {
                    return Err(ConfigError::Invalid {
                        path: path.to_owned(),
                        problems: vec![problem.with_snippet(&text)],
                    });
                }
            }
        }
    };
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let state_dir = match state_dir {
        Some(dir) => crate::expand::path(&dir).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![Problem::new(path, None, format!("state_dir: {e}"))],
        })?,
        None => PathBuf::from("state"),
    };
    Ok(base.join(state_dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::{DEFAULT_POLL_INTERVAL, StartAt};

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
    fn a_bad_key_hides_no_other_problem() {
        let error = Config::from_yaml(
            "version: 2\nstat_dir: s\nsources:\n  - kind: sip_trac\n    path: x\n  - kind: hook\n    poll_interval: soon\ncorrelate: { window: forever }\n",
            Path::new("c.yaml"),
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &error else {
            panic!("{error}")
        };
        let places: Vec<_> = problems.iter().map(|p| p.at.unwrap()).collect();
        assert_eq!(places, [(1, 10), (2, 1), (4, 11), (7, 20), (8, 22)], "{error}");
        assert!(problems[1].message.contains("did you mean `state_dir`?"), "{error}");
        assert!(problems[3].message.starts_with("sources[1].poll_interval: "), "{error}");
    }

    #[test]
    fn unset_variables_in_paths_are_named() {
        let error = Config::from_yaml(
            "version: 1\nstate_dir: '%CALLHOOK_UNSET_STATE%/callhook'\nsources:\n  - kind: history\n    path: '${env:CALLHOOK_UNSET_APPDATA}/MicroSIP/microsip.ini'\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "state_dir: %CALLHOOK_UNSET_STATE%/callhook: environment variable CALLHOOK_UNSET_STATE is not set",
            "sources[0].path: ${env:CALLHOOK_UNSET_APPDATA}/MicroSIP/microsip.ini: environment variable CALLHOOK_UNSET_APPDATA is not set",
        ] {
            assert!(error.contains(needle), "{needle} in {error}");
        }
    }

    #[test]
    fn a_central_callhook_takes_a_broker_and_joins_by_call_id() {
        let config = Config::from_yaml(
            "version: 1\ndesk: d-1\nsources:\n  - kind: nats\n    nats: { durable: central }\n",
            Path::new("/etc/callhook/callhook.yaml"),
        )
        .unwrap();
        assert_eq!(config.desk, "d-1");
        assert_eq!(config.sources[0].key(), "nats:CALLHOOK:central");
        assert_eq!(config.correlation_window, Duration::ZERO);
        assert_eq!(config.correlation_wait(), Duration::ZERO);
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
}
