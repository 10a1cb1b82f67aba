//! What `callhook run` does when neither `-c FILE` nor `--trace FILE` says: a
//! configuration file from a documented place, else MicroSIP's own files.
//!
//! The configuration, first found wins (`-c FILE` is the caller's and comes before all):
//! 1. `$CALLHOOK_CONFIG`;
//! 2. `callhook.yaml` next to the program (the Windows zip's starter);
//! 3. the user's configuration folder: `%APPDATA%\callhook\callhook.yaml` on Windows,
//!    `$XDG_CONFIG_HOME/callhook/callhook.yaml` or `~/.config/callhook/callhook.yaml`
//!    elsewhere.
//!
//! Without one, MicroSIP's folder ([`microsip`]): `--microsip-dir DIR` when given (the
//! portable build keeps `microsip.ini` and `MicroSIP_log.txt` beside `microsip.exe`),
//! else the folder of a running portable `microsip.exe` (Windows), else the installer's
//! folders: the log in `%LOCALAPPDATA%\MicroSIP\`, the ini in `%APPDATA%\MicroSIP\`
//! (each file is looked for in both). Elsewhere the same variables when set, then
//! MicroSIP run by Wine (`$WINEPREFIX` or `~/.wine`, `drive_c/users/*/AppData/…`).
//! The log and the ini are then watched together (one call seen by both is one call),
//! with the hooks when the ini points MicroSIP's `cmd…` settings at callhook or
//! `--hooks` is given, state in [`default_state_dir`], events on stdout.
//!
//! Takes what it reads of the machine as [`Places`] (so tests give their own); hands
//! the `callhook run` command a checked [`Config`] and lines saying what it found.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::event::SourceKind;
use crate::source::config::{Source, StartAt};

/// MicroSIP's SIP log (`enableLog=1`), as it names it.
pub const TRACE_FILE: &str = "MicroSIP_log.txt";
/// MicroSIP's settings and call history.
pub const INI_FILE: &str = "microsip.ini";
/// The configuration file's name in each place it is looked for.
pub const CONFIG_FILE: &str = "callhook.yaml";

/// What the lookup reads of the machine.
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// Windows layout (`%APPDATA%`) rather than XDG and Wine prefixes.
    pub windows: bool,
    /// The folder of this program.
    pub program_dir: Option<PathBuf>,
    /// The environment variables the lookup reads (others are not looked at).
    pub vars: BTreeMap<String, OsString>,
    /// Folders of running `microsip.exe` processes.
    pub running: Vec<PathBuf>,
}

const VARS: [&str; 9] = [
    "CALLHOOK_CONFIG",
    "APPDATA",
    "LOCALAPPDATA",
    "HOME",
    "USER",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "WINEPREFIX",
    "USERPROFILE",
];

impl Places {
    /// This machine: its environment and this program's folder (running MicroSIPs are
    /// added by [`Places::with_running_microsip`]: `callhook hook` must not wait for a
    /// process list).
    pub fn of_this_machine() -> Places {
        Places {
            windows: cfg!(windows),
            program_dir: std::env::current_exe()
                .ok()
                .and_then(|exe| Some(exe.parent()?.to_owned())),
            vars: VARS
                .iter()
                .filter_map(|name| Some((name.to_string(), std::env::var_os(name)?)))
                .collect(),
            running: Vec::new(),
        }
    }

    /// These places and the folders of the running `microsip.exe` processes.
    pub fn with_running_microsip(mut self) -> Places {
        self.running = running_microsip_folders();
        self
    }

    /// A variable's value as a path, when set and not empty.
    fn var(&self, name: &str) -> Option<PathBuf> {
        self.vars.get(name).filter(|v| !v.is_empty()).map(PathBuf::from)
    }
}

/// Where a configuration file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// `$CALLHOOK_CONFIG`.
    Environment,
    /// `callhook.yaml` next to the program.
    BesideProgram,
    /// The user's configuration folder.
    UserFolder,
}

impl std::fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigOrigin::Environment => "from CALLHOOK_CONFIG",
            ConfigOrigin::BesideProgram => "next to the program",
            ConfigOrigin::UserFolder => "the user's configuration folder",
        })
    }
}

/// The configuration files looked for, in order, each with whether it counts when
/// absent (`$CALLHOOK_CONFIG` names one on purpose: a missing file is an error there).
fn config_candidates(places: &Places) -> Vec<(PathBuf, ConfigOrigin)> {
    let mut candidates = Vec::new();
    if let Some(path) = places.var("CALLHOOK_CONFIG") {
        candidates.push((path, ConfigOrigin::Environment));
    }
    if let Some(dir) = &places.program_dir {
        candidates.push((dir.join(CONFIG_FILE), ConfigOrigin::BesideProgram));
    }
    if let Some(path) = user_config_file(places) {
        candidates.push((path, ConfigOrigin::UserFolder));
    }
    candidates
}

/// The configuration file `run` (and `hook`) use without `-c`: `$CALLHOOK_CONFIG`
/// (whether or not it exists), else the first of the other places that holds one.
pub fn config_file(places: &Places) -> Option<(PathBuf, ConfigOrigin)> {
    config_candidates(places)
        .into_iter()
        .find(|(path, origin)| *origin == ConfigOrigin::Environment || path.is_file())
}

/// The user's configuration file, whether or not it exists: `%APPDATA%\callhook\
/// callhook.yaml` on Windows, else `$XDG_CONFIG_HOME/callhook/callhook.yaml` (an
/// absolute one) or `~/.config/callhook/callhook.yaml`.
pub fn user_config_file(places: &Places) -> Option<PathBuf> {
    let folder = if places.windows {
        places.var("APPDATA")
    } else {
        places
            .var("XDG_CONFIG_HOME")
            .filter(|dir| dir.is_absolute())
            .or_else(|| places.var("HOME").map(|home| home.join(".config")))
    };
    folder.map(|folder| folder.join("callhook").join(CONFIG_FILE))
}

/// The platform's folder for local state: `%LOCALAPPDATA%\callhook` on Windows,
/// `$XDG_STATE_HOME/callhook` or `~/.local/state/callhook` elsewhere.
pub fn default_state_dir(places: &Places) -> Option<PathBuf> {
    let base = if places.windows {
        places.var("LOCALAPPDATA")
    } else {
        places
            .var("XDG_STATE_HOME")
            .or_else(|| places.var("HOME").map(|home| home.join(".local/state")))
    };
    base.map(|base| base.join("callhook"))
}

/// MicroSIP's files as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicroSip {
    /// How the folder was found (for the user).
    pub found: String,
    /// `MicroSIP_log.txt`: where it is, or where MicroSIP writes it once its log is on.
    pub trace: PathBuf,
    /// Whether the log exists now.
    pub trace_exists: bool,
    /// `microsip.ini`, when found.
    pub ini: Option<PathBuf>,
    /// `[Settings] enableLog=1` in the ini.
    pub log_on: bool,
    /// The ini points a `cmd…` hook at callhook.
    pub hooks_to_callhook: bool,
}

/// A folder that may hold MicroSIP's files: where the log is looked for, then the ini.
struct Candidate {
    found: String,
    trace_dirs: Vec<PathBuf>,
    ini_dirs: Vec<PathBuf>,
}

impl Candidate {
    fn one(found: String, dir: PathBuf) -> Candidate {
        Candidate {
            found,
            trace_dirs: vec![dir.clone()],
            ini_dirs: vec![dir],
        }
    }

    /// The installer's layout under these two folders (`AppData\Local`, `\Roaming`).
    fn installer(found: String, local: Option<PathBuf>, roaming: Option<PathBuf>) -> Option<Candidate> {
        let local = local.map(|dir| dir.join("MicroSIP"));
        let roaming = roaming.map(|dir| dir.join("MicroSIP"));
        if local.is_none() && roaming.is_none() {
            return None;
        }
        Some(Candidate {
            found,
            trace_dirs: local.iter().chain(roaming.iter()).cloned().collect(),
            ini_dirs: roaming.iter().chain(local.iter()).cloned().collect(),
        })
    }

    /// The files, when at least one of them is there.
    fn look(&self) -> Option<MicroSip> {
        let first = |dirs: &[PathBuf], name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
        let trace = first(&self.trace_dirs, TRACE_FILE);
        let ini = first(&self.ini_dirs, INI_FILE);
        if trace.is_none() && ini.is_none() {
            return None;
        }
        let settings = ini.as_deref().map(read_settings).unwrap_or_default();
        Some(MicroSip {
            found: self.found.clone(),
            trace_exists: trace.is_some(),
            trace: trace.unwrap_or_else(|| self.trace_dirs[0].join(TRACE_FILE)),
            ini,
            log_on: settings.0,
            hooks_to_callhook: settings.1,
        })
    }

    fn looked_in(&self) -> impl Iterator<Item = &PathBuf> {
        self.trace_dirs.iter().chain(self.ini_dirs.iter())
    }
}

/// MicroSIP not found: every folder looked in.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", not_found_message(.given.as_deref(), .looked, .configs))]
pub struct NotFound {
    /// `--microsip-dir`, when given.
    pub given: Option<PathBuf>,
    /// The folders looked in for MicroSIP's files.
    pub looked: Vec<PathBuf>,
    /// The configuration files looked for.
    pub configs: Vec<PathBuf>,
}

fn not_found_message(given: Option<&Path>, looked: &[PathBuf], configs: &[PathBuf]) -> String {
    let list = |paths: &[PathBuf]| {
        let mut unique: Vec<String> = Vec::new();
        for path in paths {
            let path = path.display().to_string();
            if !unique.contains(&path) {
                unique.push(path);
            }
        }
        unique.join(", ")
    };
    let (what, after) = match given {
        Some(dir) => (
            format!("no {TRACE_FILE} or {INI_FILE} in --microsip-dir {}", dir.display()),
            String::new(),
        ),
        None => (
            "no configuration and no MicroSIP files found".to_owned(),
            format!(
                "\n  looked for a configuration: {}\n  looked for {TRACE_FILE} and {INI_FILE} in: {}",
                if configs.is_empty() {
                    "nowhere (no home folder)".to_owned()
                } else {
                    list(configs)
                },
                if looked.is_empty() {
                    "nowhere (LOCALAPPDATA, APPDATA and HOME are not set)".to_owned()
                } else {
                    list(looked)
                },
            ),
        ),
    };
    format!(
        "{what}{after}\n  watch a trace: callhook run --trace PATH\\{TRACE_FILE}\
         \n  or give a configuration: callhook run -c FILE (or put it at one of the places above)\
         \n  or name the folder of a portable MicroSIP (microsip.exe, {INI_FILE}): callhook run --microsip-dir DIR\
         \n  or, when MicroSIP's log is off: close MicroSIP, run `callhook setup microsip`, start MicroSIP again"
    )
}

/// MicroSIP's files: in `given` (`--microsip-dir`) only, else in the first folder
/// holding one of them (running portable MicroSIP, installer folders, Wine prefixes).
pub fn microsip(places: &Places, given: Option<&Path>) -> Result<MicroSip, NotFound> {
    let candidates = match given {
        Some(dir) => vec![Candidate::one(
            format!("in --microsip-dir {}", dir.display()),
            dir.to_owned(),
        )],
        None => candidates(places),
    };
    if let Some(found) = candidates.iter().find_map(Candidate::look) {
        return Ok(found);
    }
    Err(NotFound {
        given: given.map(Path::to_owned),
        looked: candidates.iter().flat_map(Candidate::looked_in).cloned().collect(),
        configs: config_candidates(places).into_iter().map(|(path, _)| path).collect(),
    })
}

/// Where MicroSIP's files are looked for when no folder is given, in order.
fn candidates(places: &Places) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = places
        .running
        .iter()
        .map(|dir| {
            Candidate::one(
                format!("beside the running {}", dir.join("microsip.exe").display()),
                dir.clone(),
            )
        })
        .collect();
    candidates.extend(Candidate::installer(
        "in MicroSIP's folders (%LOCALAPPDATA%, %APPDATA%)".to_owned(),
        places.var("LOCALAPPDATA"),
        places.var("APPDATA"),
    ));
    if places.windows {
        return candidates;
    }
    let prefix = places
        .var("WINEPREFIX")
        .or_else(|| places.var("HOME").map(|home| home.join(".wine")));
    if let Some(users) = prefix.map(|prefix| prefix.join("drive_c").join("users")) {
        // The prefix's own user first, then any other (`Public` holds no AppData).
        let mut names: Vec<OsString> = places.vars.get("USER").cloned().into_iter().collect();
        if let Ok(entries) = std::fs::read_dir(&users) {
            let mut others: Vec<OsString> = entries
                .flatten()
                .map(|e| e.file_name())
                .filter(|name| !names.contains(name))
                .collect();
            others.sort();
            names.extend(others);
        }
        if names.is_empty() {
            // Nothing to look in; named so that "where it looked" says it.
            names.push("*".into());
        }
        for name in names {
            let appdata = users.join(name).join("AppData");
            candidates.extend(Candidate::installer(
                format!(
                    "in the Wine prefix {}",
                    users.parent().and_then(Path::parent).unwrap_or(&users).display()
                ),
                Some(appdata.join("Local")),
                Some(appdata.join("Roaming")),
            ));
        }
    }
    candidates
}

/// `(enableLog=1, a cmd… hook runs callhook)` from an ini's bytes; both false when it
/// cannot be read.
fn read_settings(ini: &Path) -> (bool, bool) {
    let Some(text) = std::fs::read(ini)
        .ok()
        .and_then(|bytes| crate::setup::IniText::decode(&bytes))
    else {
        return (false, false);
    };
    let mut log_on = false;
    let mut hooks = false;
    for line in text.text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("enableLog") {
            log_on = value.trim() == "1";
        }
        let is_hook = crate::setup::HOOK_SETTINGS
            .iter()
            .any(|(name, _)| key.eq_ignore_ascii_case(name));
        hooks |= is_hook && value.to_ascii_lowercase().contains("callhook");
    }
    (log_on, hooks)
}

/// What `callhook run` was given besides a configuration.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// `--microsip-dir`.
    pub microsip_dir: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--start-at`.
    pub start_at: Option<StartAt>,
    /// `--hooks`.
    pub hooks: bool,
}

/// What `callhook run` runs without `-c` or `--trace`.
#[derive(Debug)]
pub struct Plan {
    pub config: Config,
    /// No configuration file: MicroSIP's files were found (events go to stdout).
    pub zero_config: bool,
    /// What was found and is watched, a line each, for stderr.
    pub notes: Vec<String>,
}

/// Why `callhook run` cannot start without `-c` or `--trace`.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    NotFound(#[from] NotFound),
    #[error(
        "{} {}: {flags} only apply without a configuration file (it sets state_dir and sources); give --microsip-dir or --trace to run without it",
        .path.display(), .origin
    )]
    FlagsWithConfig {
        path: PathBuf,
        origin: ConfigOrigin,
        flags: String,
    },
    #[error("no home folder to keep state in (LOCALAPPDATA, XDG_STATE_HOME and HOME are not set); pass --state-dir")]
    NoStateDir,
}

/// The configuration `callhook run` runs without `-c` or `--trace`: a configuration
/// file from the places above, else MicroSIP's files watched together.
pub fn plan(places: &Places, request: &RunRequest) -> Result<Plan, DiscoverError> {
    if request.microsip_dir.is_none()
        && let Some((path, origin)) = config_file(places)
    {
        let flags: Vec<&str> = [
            (request.state_dir.is_some(), "--state-dir"),
            (request.start_at.is_some(), "--start-at"),
            (request.hooks, "--hooks"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect();
        if !flags.is_empty() {
            return Err(DiscoverError::FlagsWithConfig {
                path,
                origin,
                flags: flags.join(", "),
            });
        }
        let config = Config::load(&path)?;
        let notes = vec![format!("configuration {} ({origin})", path.display())];
        return Ok(Plan {
            config,
            zero_config: false,
            notes,
        });
    }
    let found = microsip(places, request.microsip_dir.as_deref())?;
    let state_dir = match &request.state_dir {
        Some(dir) => dir.clone(),
        None => default_state_dir(places).ok_or(DiscoverError::NoStateDir)?,
    };
    let hooks = request.hooks || found.hooks_to_callhook;
    let mut sources = vec![Source::sip_trace(&found.trace)];
    sources.extend(found.ini.iter().map(|ini| Source::new(SourceKind::History, ini)));
    if hooks {
        sources.push(Source::hook(&state_dir));
    }
    for source in &mut sources {
        source.start_at = request.start_at.unwrap_or_default();
    }
    let notes = notes(&found, hooks, &state_dir);
    Ok(Plan {
        config: Config::with_sources(state_dir, sources),
        zero_config: true,
        notes,
    })
}

/// What was found and is watched, for the user.
fn notes(found: &MicroSip, hooks: bool, state_dir: &Path) -> Vec<String> {
    let mut notes = vec![format!("no configuration file; MicroSIP found {}", found.found)];
    if found.trace_exists {
        notes.push(format!("watching {} (sip_trace)", found.trace.display()));
    } else {
        notes.push(format!(
            "watching {} (sip_trace): not there yet; MicroSIP writes it once its log is on{}",
            found.trace.display(),
            if found.log_on {
                ""
            } else {
                " (enableLog=1: close MicroSIP, run `callhook setup microsip`, start it again)"
            }
        ));
    }
    match &found.ini {
        Some(ini) => notes.push(format!(
            "watching {} (history), correlated with the trace",
            ini.display()
        )),
        None => notes.push(format!("no {INI_FILE} found: call history not watched")),
    }
    if hooks {
        notes.push("taking MicroSIP's command hooks (callhook hook)".to_owned());
    }
    notes.push(format!(
        "state in {}; events as JSON lines on stdout; no rules (give them with -c FILE)",
        state_dir.display()
    ));
    notes
}

/// Folders of running `microsip.exe` processes (Windows; elsewhere none).
#[cfg(windows)]
fn running_microsip_folders() -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = crate::setup::process_ids("microsip.exe")
        .into_iter()
        .filter_map(process_image)
        .filter_map(|exe| Some(exe.parent()?.to_owned()))
        .collect();
    folders.dedup();
    folders
}

#[cfg(not(windows))]
fn running_microsip_folders() -> Vec<PathBuf> {
    Vec::new()
}

/// The program file a process runs, when this user may ask.
#[cfg(windows)]
fn process_image(pid: u32) -> Option<PathBuf> {
    use std::os::windows::ffi::OsStringExt;
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Threading::{
        OpenProcess, PROCESS_NAME_WIN32, PROCESS_QUERY_LIMITED_INFORMATION, QueryFullProcessImageNameW,
    };
    let mut buffer = vec![0u16; 32_768];
    let mut size = buffer.len() as u32;
    // SAFETY: the handle is checked before use and closed once; the buffer and its
    // size in characters are passed as the API requires, and only `size` characters
    // are read back.
    let ok = unsafe {
        let process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if process.is_null() {
            return None;
        }
        let ok = QueryFullProcessImageNameW(process, PROCESS_NAME_WIN32, buffer.as_mut_ptr(), &mut size) != 0;
        CloseHandle(process);
        ok
    };
    let name = buffer.get(..size as usize).filter(|_| ok)?;
    Some(PathBuf::from(OsString::from_wide(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Windows machine with `AppData\Local`, `AppData\Roaming` and a program folder
    /// under `root`.
    fn windows(root: &Path) -> Places {
        let mut vars = BTreeMap::new();
        vars.insert("LOCALAPPDATA".into(), root.join("Local").into());
        vars.insert("APPDATA".into(), root.join("Roaming").into());
        Places {
            windows: true,
            program_dir: Some(root.join("program")),
            vars,
            running: Vec::new(),
        }
    }

    fn put(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn configuration_precedence_environment_beside_the_program_user_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut places = windows(dir.path());
        assert_eq!(config_file(&places), None);
        let user = dir.path().join("Roaming/callhook/callhook.yaml");
        put(&user, "");
        assert_eq!(config_file(&places), Some((user, ConfigOrigin::UserFolder)));
        let beside = dir.path().join("program/callhook.yaml");
        put(&beside, "");
        assert_eq!(config_file(&places), Some((beside, ConfigOrigin::BesideProgram)));
        // named on purpose: taken even when missing (loading it then says so)
        places.vars.insert("CALLHOOK_CONFIG".into(), "/nowhere/c.yaml".into());
        assert_eq!(
            config_file(&places),
            Some((PathBuf::from("/nowhere/c.yaml"), ConfigOrigin::Environment))
        );
    }

    #[test]
    fn xdg_config_home_then_home() {
        let mut places = Places::default();
        places.vars.insert("HOME".into(), "/home/me".into());
        assert_eq!(
            user_config_file(&places).unwrap(),
            Path::new("/home/me/.config/callhook/callhook.yaml")
        );
        places.vars.insert("XDG_CONFIG_HOME".into(), "relative".into());
        assert_eq!(
            user_config_file(&places).unwrap(),
            Path::new("/home/me/.config/callhook/callhook.yaml"),
            "a relative XDG_CONFIG_HOME is ignored (XDG spec)"
        );
        places.vars.insert("XDG_CONFIG_HOME".into(), "/cfg".into());
        assert_eq!(
            user_config_file(&places).unwrap(),
            Path::new("/cfg/callhook/callhook.yaml")
        );
        assert_eq!(
            default_state_dir(&places).unwrap(),
            Path::new("/home/me/.local/state/callhook")
        );
    }

    #[test]
    fn installer_layout_log_in_local_ini_in_roaming() {
        let dir = tempfile::tempdir().unwrap();
        let places = windows(dir.path());
        let ini = dir.path().join("Roaming/MicroSIP/microsip.ini");
        put(
            &ini,
            "[Settings]\r\nenableLog=1\r\ncmdCallEnd=C:\\callhook\\callhook-end.exe\r\n",
        );
        let found = microsip(&places, None).unwrap();
        // the log is not there yet: watched where MicroSIP will write it
        assert_eq!(found.trace, dir.path().join("Local/MicroSIP/MicroSIP_log.txt"));
        assert!(!found.trace_exists && found.log_on && found.hooks_to_callhook);
        assert_eq!(found.ini.as_deref(), Some(ini.as_path()));
        let trace = dir.path().join("Local/MicroSIP/MicroSIP_log.txt");
        put(&trace, "");
        assert!(microsip(&places, None).unwrap().trace_exists);

        let plan = plan(&places, &RunRequest::default()).unwrap();
        assert!(plan.zero_config);
        let kinds: Vec<_> = plan
            .config
            .sources
            .iter()
            .map(|s| (s.kind.events().expect("a file source"), s.path.clone()))
            .collect();
        assert_eq!(kinds[..2], [(SourceKind::SipTrace, trace), (SourceKind::History, ini)]);
        assert_eq!(kinds[2].0, SourceKind::Hook, "the ini runs callhook's hooks");
        assert_eq!(plan.config.state_dir, dir.path().join("Local/callhook"));
    }

    #[test]
    fn a_running_portable_microsip_comes_first_and_a_given_folder_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut places = windows(dir.path());
        put(&dir.path().join("Local/MicroSIP/MicroSIP_log.txt"), "");
        let portable = dir.path().join("portable");
        put(&portable.join("microsip.ini"), "[Settings]\r\nenableLog=0\r\n");
        places.running = vec![dir.path().join("Program Files/MicroSIP"), portable.clone()];
        let found = microsip(&places, None).unwrap();
        assert_eq!(found.trace, portable.join(TRACE_FILE), "{found:?}");
        assert!(found.found.contains("running"), "{}", found.found);
        assert!(!found.log_on && !found.hooks_to_callhook);

        let given = dir.path().join("given");
        std::fs::create_dir_all(&given).unwrap();
        let error = microsip(&places, Some(&given)).unwrap_err().to_string();
        assert!(error.contains("--microsip-dir") && error.contains("given"), "{error}");
    }

    #[test]
    fn not_found_says_where_it_looked_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let places = windows(dir.path());
        let error = plan(&places, &RunRequest::default()).unwrap_err().to_string();
        for needle in [
            "no configuration and no MicroSIP files found",
            "Roaming/callhook/callhook.yaml",
            "Local/MicroSIP",
            "Roaming/MicroSIP",
            "--trace",
            "-c FILE",
            "--microsip-dir",
            "callhook setup microsip",
        ] {
            assert!(error.contains(needle), "{needle} in {error}");
        }
    }

    #[test]
    fn flags_for_the_zero_config_start_are_refused_with_a_found_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let places = windows(dir.path());
        put(
            &dir.path().join("program/callhook.yaml"),
            "version: 1\nsources: [{ kind: hook }]\n",
        );
        let request = RunRequest {
            hooks: true,
            ..RunRequest::default()
        };
        let error = plan(&places, &request).unwrap_err().to_string();
        assert!(
            error.contains("--hooks") && error.contains("next to the program"),
            "{error}"
        );
        let plan = plan(&places, &RunRequest::default()).unwrap();
        assert!(!plan.zero_config && plan.notes[0].contains("next to the program"));
    }
}
