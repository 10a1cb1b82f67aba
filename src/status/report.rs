//! `callhook status`: what the state database says, whether a daemon runs or not.
//!
//! Opens the database read-only (nothing is created, migrated or locked, so it never
//! gets in a running daemon's way) and reports each configured source with its read
//! offset and how far it is behind its file, the outbox by state, the last delivery
//! errors, the endpoints a 410 Gone disabled, and whether a daemon holds the state
//! directory's lock (read from the lock file, which is never locked here).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::store::{DATABASE_FILE, Store, StoreError};

/// Delivery errors shown, at most.
const ERRORS_SHOWN: usize = 5;

/// Everything `callhook status` shows; serialized as is by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    /// Whether a daemon holds the state directory (its PID when known).
    pub daemon: Daemon,
    /// False when no daemon ever ran there (no database): the lists are then empty.
    pub database: bool,
    pub sources: Vec<SourceStatus>,
    pub outbox: Outbox,
    pub last_errors: Vec<LastError>,
    pub disabled_endpoints: Vec<Disabled>,
    /// What keeps callhook from its job (a folder gone, a stuck outbox).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Daemon {
    pub running: bool,
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub kind: String,
    pub path: PathBuf,
    /// Bytes read and committed (0 before the first checkpoint).
    pub offset: u64,
    /// The file's size now (none when it is not there).
    pub size: Option<u64>,
    /// Bytes not read yet.
    pub lag: u64,
    /// When its checkpoint last moved (RFC 3339).
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Outbox {
    pub waiting: u64,
    pub retrying: u64,
    pub done: u64,
    pub dead: u64,
    /// Age of the oldest job waiting or retrying, seconds.
    pub oldest_waiting_s: Option<f64>,
    pub by_rule: Vec<RuleCounts>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleCounts {
    pub rule: String,
    pub waiting: u64,
    pub retrying: u64,
    pub done: u64,
    pub dead: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub job: i64,
    pub rule: String,
    pub status: String,
    pub error: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disabled {
    pub endpoint: String,
    pub reason: String,
    pub since: String,
}

/// Reads the status of the daemon configured by `config_path` (loaded as `config`).
pub fn report(config_path: &Path, config: &Config) -> Result<Report, StoreError> {
    let state_dir = config.state_dir.clone();
    let mut report = Report {
        config: config_path.to_owned(),
        daemon: daemon(&state_dir),
        database: state_dir.join(DATABASE_FILE).is_file(),
        state_dir,
        sources: Vec::new(),
        outbox: Outbox::default(),
        last_errors: Vec::new(),
        disabled_endpoints: Vec::new(),
        problems: Vec::new(),
    };
    let mut store = match report.database {
        true => Some(Store::open_read_only(&report.state_dir)?),
        false => None,
    };
    let rows = match &store {
        Some(store) => store.source_rows()?,
        None => Vec::new(),
    };
    for source in &config.sources {
        let row = rows.iter().find(|r| r.key == source.key());
        let size = std::fs::metadata(&source.path).ok().map(|m| m.len());
        let offset = row.map_or(0, |r| r.resume_offset);
        if let Some(folder) = source
            .path
            .parent()
            .filter(|f| !f.as_os_str().is_empty() && !f.is_dir())
        {
            report
                .problems
                .push(format!("source {}: folder {} is gone", source.key(), folder.display()));
        }
        report.sources.push(SourceStatus {
            kind: source.kind.as_str().to_owned(),
            path: source.path.clone(),
            offset,
            size,
            lag: size.unwrap_or(0).saturating_sub(offset),
            updated_at: row.map(|r| r.updated_at.clone()),
        });
    }
    if let Some(store) = &mut store {
        outbox(store, &mut report)?;
    }
    Ok(report)
}

/// The outbox part of the report.
fn outbox(store: &mut Store, report: &mut Report) -> Result<(), StoreError> {
    for stats in store.job_stats()? {
        report.outbox.waiting += stats.pending;
        report.outbox.retrying += stats.retrying;
        report.outbox.done += stats.done;
        report.outbox.dead += stats.dead;
        report.outbox.by_rule.push(RuleCounts {
            rule: stats.rule,
            waiting: stats.pending,
            retrying: stats.retrying,
            done: stats.done,
            dead: stats.dead,
        });
    }
    let (oldest, _) = store.waiting_extremes()?;
    report.outbox.oldest_waiting_s = oldest
        .and_then(|job| job.created_at.parse::<jiff::Timestamp>().ok())
        .map(|made| jiff::Timestamp::now().duration_since(made).as_secs_f64().max(0.0));
    report.last_errors = store
        .last_errors(ERRORS_SHOWN)?
        .into_iter()
        .map(|j| LastError {
            job: j.id,
            rule: j.rule,
            status: j.status,
            error: j.error,
            at: j.updated_at,
        })
        .collect();
    report.disabled_endpoints = store
        .disabled_endpoints()?
        .into_iter()
        .map(|d| Disabled {
            endpoint: d.endpoint,
            reason: d.reason,
            since: d.since,
        })
        .collect();
    // No daemon's own reports here (they live in its memory): the stuck outbox only.
    report
        .problems
        .extend(super::problems(store, &crate::metrics::Metrics::new())?);
    Ok(())
}

/// Whether a daemon holds `state_dir`'s lock: the PID in its lock file is alive (Unix),
/// or the file cannot be read because it is locked (Windows).
fn daemon(state_dir: &Path) -> Daemon {
    let path = state_dir.join(crate::daemon::LOCK_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let pid: Option<u32> = text.trim().parse().ok();
            Daemon {
                running: pid.is_some_and(alive),
                pid: pid.filter(|&p| alive(p)),
            }
        }
        Err(error) => Daemon {
            running: cfg!(windows) && error.kind() != std::io::ErrorKind::NotFound,
            pid: None,
        },
    }
}

#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks that the process exists without touching it.
    // SAFETY: kill with signal 0 sends nothing.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    // A readable lock file on Windows is not locked: no daemon holds it.
    false
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "config: {}", self.config.display());
        let _ = writeln!(
            out,
            "daemon: {}",
            match (self.daemon.running, self.daemon.pid) {
                (true, Some(pid)) => format!("running (PID {pid})"),
                (true, None) => "running".to_owned(),
                (false, _) => "not running".to_owned(),
            }
        );
        if !self.database {
            let _ = writeln!(
                out,
                "state: no database in {} yet (callhook run has not run there)",
                self.state_dir.display()
            );
        } else {
            let _ = writeln!(out, "state: {}", self.state_dir.join(DATABASE_FILE).display());
        }
        let _ = writeln!(out, "sources:");
        for s in &self.sources {
            let _ = writeln!(
                out,
                "  {:<10} {}  read {} of {} bytes, {} behind{}",
                s.kind,
                s.path.display(),
                s.offset,
                s.size.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                s.lag,
                s.updated_at
                    .as_deref()
                    .map(|at| format!(", checkpoint {at}"))
                    .unwrap_or_default()
            );
        }
        let o = &self.outbox;
        let _ = writeln!(
            out,
            "outbox: {} waiting, {} retrying, {} delivered, {} dead{}",
            o.waiting,
            o.retrying,
            o.done,
            o.dead,
            o.oldest_waiting_s
                .map(|s| format!(" (oldest waiting {s:.0} s)"))
                .unwrap_or_default()
        );
        for r in &o.by_rule {
            let _ = writeln!(
                out,
                "  {:<24} {} waiting, {} retrying, {} delivered, {} dead",
                r.rule, r.waiting, r.retrying, r.done, r.dead
            );
        }
        for e in &self.last_errors {
            let error = crate::event::escape_controls(&e.error);
            let _ = writeln!(
                out,
                "last error: job {} ({}, {}) at {}: {error}",
                e.job, e.rule, e.status, e.at
            );
        }
        for d in &self.disabled_endpoints {
            let _ = writeln!(
                out,
                "disabled since {}: {} ({}); `callhook outbox retry` enables it again",
                d.since, d.endpoint, d.reason
            );
        }
        for p in &self.problems {
            let _ = writeln!(out, "problem: {p}");
        }
        f.write_str(out.trim_end())
    }
}
