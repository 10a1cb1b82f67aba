//! `sources:` in the configuration: what was written ([`SourceConfig`]) and the checked
//! [`Source`] a source task runs from.
//!
//! Every field's doc comment is the reference for that key. [`SourceConfig::build`]
//! checks each value once (durations, time zones, paths, the hook's loopback address),
//! so a running source never meets a bad one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::duration::parse_duration;
use crate::event::SourceKind;
use crate::parse::call_log::ColumnMapping;

/// One watched file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// What the file is: `sip_trace` (MicroSIP's `MicroSIP_log.txt`, a PJSIP log),
    /// `call_log` (a call-log CSV: state rows or MicroSIP history-export rows), or
    /// `history` (MicroSIP's `microsip.ini`, whose `[Calls]` it rewrites on each change),
    /// or `hook` (messages from `callhook hook`, which MicroSIP's `cmd...` settings start),
    /// or `nats` / `mqtt` (events other callhooks published to a broker; see `nats:`,
    /// `mqtt:`).
    pub kind: Kind,
    /// The file; relative paths are relative to this file's folder. It need not exist yet.
    /// `%NAME%`, `${env:NAME}` and a leading `~` are expanded (`crate::expand`), e.g.
    /// `'%LOCALAPPDATA%\MicroSIP\MicroSIP_log.txt'`; an unset variable is an error.
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
    /// `nats` only: the server, stream and durable consumer (see `source::nats`).
    #[serde(default)]
    pub nats: Option<super::nats::NatsSourceConfig>,
    /// `mqtt` only: the broker, topics and session (see `source::mqtt`).
    #[serde(default)]
    pub mqtt: Option<super::mqtt::MqttSourceConfig>,
}

/// What a configured source reads: a file or channel whose events it makes itself
/// (their `source` is the same kind), or a broker that brings events other callhooks
/// made (which keep the `source` and `source_path` they were made with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    SipTrace,
    CallLog,
    History,
    Hook,
    Nats,
    Mqtt,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self.events() {
            Some(kind) => kind.as_str(),
            None if self == Kind::Nats => "nats",
            None => "mqtt",
        }
    }

    /// The `source` of the events this kind makes; `None` for a broker.
    pub fn events(self) -> Option<SourceKind> {
        match self {
            Kind::SipTrace => Some(SourceKind::SipTrace),
            Kind::CallLog => Some(SourceKind::CallLog),
            Kind::History => Some(SourceKind::History),
            Kind::Hook => Some(SourceKind::Hook),
            Kind::Nats | Kind::Mqtt => None,
        }
    }

    /// Whether it takes events from a broker.
    pub fn is_broker(self) -> bool {
        self.events().is_none()
    }
}

impl From<SourceKind> for Kind {
    fn from(kind: SourceKind) -> Kind {
        match kind {
            SourceKind::SipTrace => Kind::SipTrace,
            SourceKind::CallLog => Kind::CallLog,
            SourceKind::History => Kind::History,
            SourceKind::Hook => Kind::Hook,
        }
    }
}

impl PartialEq<SourceKind> for Kind {
    fn eq(&self, other: &SourceKind) -> bool {
        self.events() == Some(*other)
    }
}

/// A broker source's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerSource {
    Nats(super::nats::NatsSource),
    Mqtt(super::mqtt::MqttSource),
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

/// Where a `hook` source listens unless told otherwise: loopback, any free port.
pub const DEFAULT_HOOK_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A checked source.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: Kind,
    pub path: PathBuf,
    pub start_at: StartAt,
    pub poll_interval: Duration,
    pub time_zone: TimeZone,
    pub prefer_asserted_identity: bool,
    /// `call_log`: header names overriding the aliases.
    pub columns: ColumnMapping,
    /// `hook`: where to listen (loopback).
    pub listen: SocketAddr,
    /// `nats`, `mqtt`: the broker (then `path` is its URL, for display).
    pub broker: Option<BrokerSource>,
}

impl Source {
    /// A source of `kind` reading `path`, with the defaults.
    pub fn new(kind: SourceKind, path: impl Into<PathBuf>) -> Source {
        Source {
            kind: kind.into(),
            path: path.into(),
            start_at: StartAt::End,
            poll_interval: DEFAULT_POLL_INTERVAL,
            time_zone: TimeZone::system(),
            prefer_asserted_identity: false,
            columns: ColumnMapping::default(),
            listen: DEFAULT_HOOK_LISTEN,
            broker: None,
        }
    }

    /// A SIP trace source with the defaults.
    pub fn sip_trace(path: impl Into<PathBuf>) -> Source {
        Source::new(SourceKind::SipTrace, path)
    }

    /// A hook source with the defaults; its messages are spooled in `state_dir`.
    pub fn hook(state_dir: &Path) -> Source {
        Source::new(SourceKind::Hook, super::hook_inbox::Inbox::new(state_dir).spool_dir())
    }

    /// A call-log CSV source with the defaults.
    pub fn call_log(path: impl Into<PathBuf>) -> Source {
        Source::new(SourceKind::CallLog, path)
    }

    /// The name of this source's checkpoint in the state database.
    pub fn key(&self) -> String {
        match (self.kind, &self.broker) {
            (_, Some(BrokerSource::Nats(nats))) => nats.key(),
            (_, Some(BrokerSource::Mqtt(mqtt))) => mqtt.key(),
            // One hook source per state directory.
            (Kind::Hook, _) => super::hook::HOOK_SOURCE_KEY.to_owned(),
            (kind, _) => format!("{}:{}", kind.as_str(), self.path.display()),
        }
    }
}

impl SourceConfig {
    /// Checks every value of `sources[index]`; relative paths are taken relative to
    /// `base`, a hook's spool lies in `state_dir`. Problems are added to `problems`
    /// (all of them, each naming its key), and the source is built with defaults in
    /// their place so the rest can still be checked.
    pub fn build(&self, index: usize, base: &Path, state_dir: &Path, problems: &mut Vec<String>) -> Source {
        let at = format!("sources[{index}]");
        let mut problem = |text: String| problems.push(format!("{at}.{text}"));
        let poll_interval = match &self.poll_interval {
            None => DEFAULT_POLL_INTERVAL,
            Some(text) => match parse_duration(text) {
                Ok(d) if d >= Duration::from_millis(10) => d,
                Ok(_) => {
                    problem(format!("poll_interval: {text:?} is too short (at least 10ms)"));
                    DEFAULT_POLL_INTERVAL
                }
                Err(e) => {
                    problem(format!("poll_interval: {e}"));
                    DEFAULT_POLL_INTERVAL
                }
            },
        };
        let time_zone = match &self.time_zone {
            None => TimeZone::system(),
            Some(name) => TimeZone::get(name).unwrap_or_else(|e| {
                problem(format!("time_zone: unknown time zone {name:?}: {e}"));
                TimeZone::UTC
            }),
        };
        if self.columns.is_some() && self.kind != Kind::CallLog {
            problem("columns: only a call_log source has columns".to_owned());
        }
        let listen = self.listen(&mut problem);
        let broker = self.broker(base, &mut problem);
        let path = match &broker {
            Some(BrokerSource::Nats(nats)) => PathBuf::from(&nats.server.url),
            Some(BrokerSource::Mqtt(mqtt)) => PathBuf::from(&mqtt.server.url),
            None if self.kind.is_broker() => PathBuf::new(),
            None => self.path(base, state_dir, &mut problem),
        };
        Source {
            broker,
            columns: self.columns.clone().unwrap_or_default(),
            kind: self.kind,
            path,
            listen,
            start_at: self.start_at,
            poll_interval,
            time_zone,
            prefer_asserted_identity: self.prefer_asserted_identity,
        }
    }

    /// `listen:`, a hook's loopback address.
    fn listen(&self, problem: &mut impl FnMut(String)) -> SocketAddr {
        let is_hook = self.kind == Kind::Hook;
        match (&self.listen, is_hook) {
            (None, _) => DEFAULT_HOOK_LISTEN,
            (Some(_), false) => {
                problem("listen: only a hook source listens".to_owned());
                DEFAULT_HOOK_LISTEN
            }
            (Some(text), true) => match text.parse::<SocketAddr>() {
                Ok(address) if address.ip().is_loopback() => address,
                Ok(address) => {
                    problem(format!(
                        "listen: {address} is not a loopback address; hooks come from this machine only (use 127.0.0.1:PORT)"
                    ));
                    DEFAULT_HOOK_LISTEN
                }
                Err(e) => {
                    problem(format!("listen: {text:?} is not an address like 127.0.0.1:7878: {e}"));
                    DEFAULT_HOOK_LISTEN
                }
            },
        }
    }

    /// `nats:` / `mqtt:`, a broker source's settings (defaults when not given).
    fn broker(&self, base: &Path, problem: &mut impl FnMut(String)) -> Option<BrokerSource> {
        if self.nats.is_some() && self.kind != Kind::Nats {
            problem("nats: only a nats source has these settings".to_owned());
        }
        if self.mqtt.is_some() && self.kind != Kind::Mqtt {
            problem("mqtt: only an mqtt source has these settings".to_owned());
        }
        if self.kind.is_broker() && self.path.is_some() {
            problem(format!(
                "path: a {} source has no path (give its url)",
                self.kind.as_str()
            ));
        }
        let built = match self.kind {
            Kind::Nats => self
                .nats
                .clone()
                .unwrap_or_default()
                .build(base)
                .map(BrokerSource::Nats)
                .map_err(|e| format!("nats.{e}")),
            Kind::Mqtt => self
                .mqtt
                .clone()
                .unwrap_or_default()
                .build(base)
                .map(BrokerSource::Mqtt)
                .map_err(|e| format!("mqtt.{e}")),
            _ => return None,
        };
        built.map_err(problem).ok()
    }

    /// `path:`, required for every kind but `hook` (whose messages wait in its spool).
    fn path(&self, base: &Path, state_dir: &Path, problem: &mut impl FnMut(String)) -> PathBuf {
        match (&self.path, self.kind == Kind::Hook) {
            (Some(path), false) => match crate::expand::path(path) {
                Ok(path) => base.join(path),
                Err(e) => {
                    problem(format!("path: {e}"));
                    PathBuf::new()
                }
            },
            (None, true) => super::hook_inbox::Inbox::new(state_dir).spool_dir(),
            (Some(_), true) => {
                problem("path: a hook source has no path (its messages wait in state_dir/hook-spool)".to_owned());
                PathBuf::new()
            }
            (None, false) => {
                problem(format!(
                    "path: a {} source needs the path of its file",
                    self.kind.as_str()
                ));
                PathBuf::new()
            }
        }
    }
}
