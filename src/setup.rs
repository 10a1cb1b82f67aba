//! `callhook setup microsip`: switches MicroSIP's log (and, with `--hooks`, its command
//! hooks) on by editing `microsip.ini`, and `--undo` puts it back.
//!
//! Takes the ini's path (default `%APPDATA%\MicroSIP\microsip.ini`, the installer's
//! layout) and edits only the `[Settings]` keys it owns: `enableLog=1` and, with hooks,
//! `cmdIncomingCall` … `cmdCallEnd` pointing at `callhook-EVENT.exe` links beside this
//! program (README, `callhook hook`). Every other byte stays as it was: the text is
//! decoded (UTF-16LE with BOM as MicroSIP writes it, or UTF-8), edited line by line
//! keeping each line's own ending, and encoded back the same way. The first run keeps
//! the original as `microsip.ini.callhook-backup`; running again changes nothing;
//! `--undo` gives the owned keys their backed-up values again (removing those that were
//! absent), which restores the original byte for byte when MicroSIP changed nothing
//! else meanwhile, and keeps MicroSIP's own later changes (call history) when it did.
//! MicroSIP rewrites its ini when it exits, so this refuses to run while it runs.

use std::fs;
use std::path::{Path, PathBuf};

/// The key that switches MicroSIP's SIP log on.
const ENABLE_LOG: &str = "enableLog";

/// MicroSIP's command settings and the `callhook hook` event each one runs.
pub const HOOK_SETTINGS: [(&str, &str); 7] = [
    ("cmdIncomingCall", "incoming"),
    ("cmdCallRing", "ring"),
    ("cmdOutgoingCall", "outgoing"),
    ("cmdCallAnswer", "answer"),
    ("cmdCallStart", "start"),
    ("cmdCallBusy", "busy"),
    ("cmdCallEnd", "end"),
];

/// What went wrong; each message names the file and, where known, the fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{}: not UTF-16LE (with BOM) or UTF-8 text; is it MicroSIP's microsip.ini?", .0.display())]
    Encoding(PathBuf),
    #[error("{}: no backup {} to undo from (setup was not run, or the backup was removed)", ini.display(), backup.display())]
    NoBackup { ini: PathBuf, backup: PathBuf },
    #[error(
        "MicroSIP is running and rewrites microsip.ini when it exits: close MicroSIP (tray icon, Exit) and run this again"
    )]
    MicroSipRunning,
    #[error("cannot make the hook program {}: {source}; copy {} there by hand", link.display(), program.display())]
    Link {
        link: PathBuf,
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("no default microsip.ini: {0}; pass --ini PATH")]
    NoDefault(&'static str),
}

/// What `setup microsip` was asked to do.
#[derive(Debug, Clone)]
pub struct MicroSipSetup {
    /// The `microsip.ini` to edit.
    pub ini: PathBuf,
    /// Also point MicroSIP's command hooks at callhook.
    pub hooks: bool,
    /// Put back what an earlier setup changed.
    pub undo: bool,
    /// This program; the hook links are made beside it.
    pub program: PathBuf,
}

/// `%APPDATA%\MicroSIP\microsip.ini` (MicroSIP's installer layout); portable builds
/// keep it next to `microsip.exe`, given with `--ini`.
pub fn default_ini() -> Result<PathBuf, SetupError> {
    if !cfg!(windows) {
        return Err(SetupError::NoDefault("MicroSIP runs on Windows only"));
    }
    std::env::var_os("APPDATA")
        .filter(|v| !v.is_empty())
        .map(|appdata| PathBuf::from(appdata).join("MicroSIP").join("microsip.ini"))
        .ok_or(SetupError::NoDefault("%APPDATA% is not set"))
}

/// The backup kept beside `ini`.
pub fn backup_path(ini: &Path) -> PathBuf {
    let mut name = ini.file_name().unwrap_or_default().to_os_string();
    name.push(".callhook-backup");
    ini.with_file_name(name)
}

/// Runs the setup (or its undo); returns one line per change made (empty: nothing to do).
pub fn run(setup: &MicroSipSetup) -> Result<Vec<String>, SetupError> {
    if microsip_running() {
        return Err(SetupError::MicroSipRunning);
    }
    let read = |path: &Path| {
        fs::read(path).map_err(|source| SetupError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let bytes = read(&setup.ini)?;
    let current = IniText::decode(&bytes).ok_or_else(|| SetupError::Encoding(setup.ini.clone()))?;
    let backup = backup_path(&setup.ini);
    let (text, mut report) = if setup.undo {
        if !backup.is_file() {
            return Err(SetupError::NoBackup {
                ini: setup.ini.clone(),
                backup,
            });
        }
        let original = IniText::decode(&read(&backup)?).ok_or_else(|| SetupError::Encoding(backup.clone()))?;
        let setups = [settings(&setup.program, false), settings(&setup.program, true)];
        undo(&current.text, &original.text, &setups)
    } else {
        apply(&current.text, &settings(&setup.program, setup.hooks))
    };
    if text != current.text {
        if !setup.undo && !backup.exists() {
            write_whole(&backup, &bytes)?;
            report.push(format!("original kept as {}", backup.display()));
        }
        write_whole(&setup.ini, &current.with_text(text).encode())?;
    }
    if setup.undo {
        if backup.exists() {
            fs::remove_file(&backup).map_err(|source| SetupError::Write { path: backup, source })?;
        }
        report.extend(remove_hook_links(&setup.program));
    } else if setup.hooks {
        report.extend(make_hook_links(&setup.program)?);
    }
    Ok(report)
}

/// The owned keys and the values setup gives them.
fn settings(program: &Path, hooks: bool) -> Vec<(&'static str, String)> {
    let mut wanted = vec![(ENABLE_LOG, "1".to_owned())];
    if hooks {
        for (key, event) in HOOK_SETTINGS {
            wanted.push((key, hook_link(program, event).display().to_string()));
        }
    }
    wanted
}

/// `callhook-EVENT.exe` (or without `.exe` elsewhere) beside `program`.
pub fn hook_link(program: &Path, event: &str) -> PathBuf {
    program.with_file_name(format!("callhook-{event}{}", std::env::consts::EXE_SUFFIX))
}

fn make_hook_links(program: &Path) -> Result<Vec<String>, SetupError> {
    let mut made = Vec::new();
    for (_, event) in HOOK_SETTINGS {
        let link = hook_link(program, event);
        if link.exists() {
            continue;
        }
        fs::hard_link(program, &link)
            .or_else(|_| fs::copy(program, &link).map(|_| ()))
            .map_err(|source| SetupError::Link {
                link: link.clone(),
                program: program.to_owned(),
                source,
            })?;
        made.push(format!("made {}", link.display()));
    }
    Ok(made)
}

fn remove_hook_links(program: &Path) -> Vec<String> {
    HOOK_SETTINGS
        .iter()
        .map(|(_, event)| hook_link(program, event))
        .filter(|link| link.is_file() && fs::remove_file(link).is_ok())
        .map(|link| format!("removed {}", link.display()))
        .collect()
}

/// Writes `bytes` to a file beside `path`, then renames it over `path`, so a crash
/// leaves the old file or the new one, never half of one.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".callhook-new");
    let temporary = path.with_file_name(name);
    let error = |source| SetupError::Write {
        path: path.to_owned(),
        source,
    };
    fs::write(&temporary, bytes).map_err(error)?;
    fs::rename(&temporary, path).map_err(error)
}

/// Whether a `microsip.exe` runs.
fn microsip_running() -> bool {
    processes_named("microsip.exe") > 0
}

/// How many processes run the program `image` (e.g. `microsip.exe`, any letter case).
pub(crate) fn processes_named(image: &str) -> usize {
    process_ids(image).len()
}

/// The ids of the processes that run the program `image` (any letter case), from a
/// toolhelp snapshot (`tasklist` would do on Windows, but Wine's prints nothing, and
/// the tests run there). Elsewhere none: MicroSIP runs only on Windows.
#[cfg(windows)]
pub(crate) fn process_ids(image: &str) -> Vec<u32> {
    use windows_sys::Win32::Foundation::{CloseHandle, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
    };
    // SAFETY: the snapshot handle is checked before use and closed once; the entry is a
    // plain C struct, zeroed and sized as the API requires, filled by the API.
    unsafe {
        let snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
        if snapshot == INVALID_HANDLE_VALUE {
            tracing::warn!("cannot list processes to see whether {image} runs");
            return Vec::new();
        }
        let mut entry: PROCESSENTRY32W = std::mem::zeroed();
        entry.dwSize = std::mem::size_of::<PROCESSENTRY32W>() as u32;
        let mut ids = Vec::new();
        let mut more = Process32FirstW(snapshot, &mut entry) != 0;
        while more {
            let name = &entry.szExeFile;
            let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            if String::from_utf16_lossy(&name[..len]).eq_ignore_ascii_case(image) {
                ids.push(entry.th32ProcessID);
            }
            more = Process32NextW(snapshot, &mut entry) != 0;
        }
        CloseHandle(snapshot);
        ids
    }
}

#[cfg(not(windows))]
pub(crate) fn process_ids(_image: &str) -> Vec<u32> {
    Vec::new()
}

/// An ini file's text and how it was encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniText {
    pub text: String,
    encoding: Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf16LeBom,
    Utf8Bom,
    Utf8,
}

impl IniText {
    /// Decodes UTF-16LE with BOM (MicroSIP's), UTF-8 with or without BOM; `None` for
    /// anything that would not encode back to the same bytes.
    pub fn decode(bytes: &[u8]) -> Option<IniText> {
        if let Some(rest) = bytes.strip_prefix(&[0xff, 0xfe]) {
            if rest.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = rest.chunks_exact(2).map(|p| u16::from_le_bytes([p[0], p[1]])).collect();
            let text = String::from_utf16(&units).ok()?;
            return Some(IniText {
                text,
                encoding: Encoding::Utf16LeBom,
            });
        }
        let (rest, encoding) = match bytes.strip_prefix(&[0xef, 0xbb, 0xbf]) {
            Some(rest) => (rest, Encoding::Utf8Bom),
            None => (bytes, Encoding::Utf8),
        };
        let text = String::from_utf8(rest.to_vec()).ok()?;
        Some(IniText { text, encoding })
    }

    fn with_text(&self, text: String) -> IniText {
        IniText {
            text,
            encoding: self.encoding,
        }
    }

    /// The bytes, in the encoding it was read in.
    pub fn encode(&self) -> Vec<u8> {
        match self.encoding {
            Encoding::Utf16LeBom => [0xff, 0xfe]
                .into_iter()
                .chain(self.text.encode_utf16().flat_map(u16::to_le_bytes))
                .collect(),
            Encoding::Utf8Bom => [0xef, 0xbb, 0xbf].iter().chain(self.text.as_bytes()).copied().collect(),
            Encoding::Utf8 => self.text.as_bytes().to_vec(),
        }
    }
}

/// `text` with each `(key, value)` set in `[Settings]`, and what changed.
pub fn apply(text: &str, wanted: &[(&str, String)]) -> (String, Vec<String>) {
    let mut lines = Lines::of(text);
    let mut report = Vec::new();
    for (key, value) in wanted {
        let old = lines.get(key);
        if old.as_deref() != Some(value.as_str()) {
            lines.set(key, value);
            report.push(match old {
                Some(old) => format!("{key}={value} (was {old})"),
                None => format!("{key}={value} (added)"),
            });
        }
    }
    (lines.join(), report)
}

/// `text` with each owned key (those of the last of `setups`) given its value in
/// `original` again (removed when it had none), and what changed. When `text` is
/// exactly what one of `setups` made of `original`, the result is `original` itself.
pub fn undo(text: &str, original: &str, setups: &[Vec<(&str, String)>]) -> (String, Vec<String>) {
    if let Some(made) = setups
        .iter()
        .map(|wanted| apply(original, wanted))
        .find(|(made, _)| made == text)
    {
        let report = made.1.iter().map(|change| format!("undone: {change}")).collect();
        return (original.to_owned(), report);
    }
    let owned = setups.last().map_or(&[][..], Vec::as_slice);
    let before = Lines::of(original);
    let mut lines = Lines::of(text);
    let mut report = Vec::new();
    for (key, _) in owned {
        let (now, then) = (lines.get(key), before.get(key));
        if now == then {
            continue;
        }
        match &then {
            Some(value) => lines.set(key, value),
            None => lines.remove(key),
        }
        report.push(match then {
            Some(value) => format!("{key}={value} again"),
            None => format!("{key} removed"),
        });
    }
    if before.section().is_none() {
        lines.remove_empty_section();
    }
    (lines.join(), report)
}

/// An ini's lines, each with its own ending, and edits to its `[Settings]` section.
struct Lines {
    lines: Vec<String>,
    eol: &'static str,
}

impl Lines {
    fn of(text: &str) -> Lines {
        Lines {
            lines: text.split_inclusive('\n').map(str::to_owned).collect(),
            eol: if text.contains("\r\n") || text.is_empty() {
                "\r\n"
            } else {
                "\n"
            },
        }
    }

    fn join(&self) -> String {
        self.lines.concat()
    }

    /// The `[Settings]` section: the header's index and the end (exclusive).
    fn section(&self) -> Option<(usize, usize)> {
        let is_header = |line: &String| line.trim().starts_with('[');
        let start = self
            .lines
            .iter()
            .position(|l| l.trim().eq_ignore_ascii_case("[Settings]"))?;
        let end = self.lines[start + 1..]
            .iter()
            .position(is_header)
            .map_or(self.lines.len(), |n| start + 1 + n);
        Some((start, end))
    }

    /// The index of `key`'s line in `[Settings]` (keys compare without case, as
    /// Windows' profile functions do).
    fn find(&self, key: &str) -> Option<usize> {
        let (start, end) = self.section()?;
        (start + 1..end).find(|&i| {
            self.lines[i]
                .split_once('=')
                .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case(key))
        })
    }

    fn get(&self, key: &str) -> Option<String> {
        let line = &self.lines[self.find(key)?];
        let value = line.split_once('=').map_or("", |(_, v)| v);
        Some(value.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn set(&mut self, key: &str, value: &str) {
        if let Some(i) = self.find(key) {
            let line = &self.lines[i];
            let name = line.split_once('=').map_or(key, |(name, _)| name);
            let ending = &line[line.trim_end_matches(['\r', '\n']).len()..];
            let ending = if ending.is_empty() { self.eol } else { ending };
            self.lines[i] = format!("{name}={value}{ending}");
            return;
        }
        let entry = format!("{key}={value}{}", self.eol);
        match self.section() {
            Some((start, end)) => {
                // after the section's last non-blank line, before blank lines that
                // separate it from the next section
                let last = (start..end)
                    .rev()
                    .find(|&i| !self.lines[i].trim().is_empty())
                    .unwrap_or(start);
                self.terminate(last);
                self.lines.insert(last + 1, entry);
            }
            None => {
                if let Some(last) = self.lines.len().checked_sub(1) {
                    self.terminate(last);
                }
                self.lines.push(format!("[Settings]{}", self.eol));
                self.lines.push(entry);
            }
        }
    }

    /// Gives line `i` an ending when it has none (the file's last line).
    fn terminate(&mut self, i: usize) {
        if !self.lines[i].ends_with('\n') {
            let eol = self.eol;
            self.lines[i].push_str(eol);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(i) = self.find(key) {
            self.lines.remove(i);
        }
    }

    /// Removes a `[Settings]` header with nothing under it (one setup added).
    fn remove_empty_section(&mut self) {
        if let Some((start, end)) = self.section()
            && end == start + 1
        {
            self.lines.remove(start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = "[Settings]\r\naccountId=1\r\n; a comment\r\nenableLog=0\r\ncmdCallRing=C:\\old.exe\r\nsingleMode=1\r\n\r\n[Account1]\r\nlabel=Front Desk \u{00e9}\u{4e2d}\r\n\r\n[Calls]\r\n0=5551234;Alice;1;1764580000;12;\r\n";

    fn wanted() -> Vec<(&'static str, String)> {
        settings(Path::new("C:/callhook/callhook.exe"), true)
    }

    #[test]
    fn apply_sets_owned_keys_and_keeps_every_other_line() {
        let (text, report) = apply(INI, &wanted());
        assert!(text.contains("enableLog=1\r\n"), "{text}");
        assert!(text.contains("cmdCallRing=C:/callhook/callhook-ring"), "{text}");
        assert!(text.contains("cmdCallEnd=C:/callhook/callhook-end"), "{text}");
        for line in INI
            .lines()
            .filter(|l| !l.starts_with("enableLog") && !l.starts_with("cmdCallRing"))
        {
            assert!(text.lines().any(|l| l == line), "kept: {line:?}");
        }
        // new keys go to [Settings], before its blank line
        let settings_part = &text[..text.find("[Account1]").unwrap()];
        assert!(settings_part.ends_with("\r\n\r\n"), "{settings_part:?}");
        assert_eq!(settings_part.matches("cmd").count(), 7);
        assert_eq!(report.len(), 8, "{report:?}");
        assert_eq!(apply(&text, &wanted()), (text.clone(), vec![]), "idempotent");
    }

    #[test]
    fn undo_restores_the_original_exactly_and_keeps_later_changes() {
        let (text, _) = apply(INI, &wanted());
        assert_eq!(undo(&text, INI, &[wanted()]).0, INI);
        // MicroSIP added a call meanwhile: that stays, the owned keys go back
        let later = text.clone() + "1=5559876;Bob;2;1764590000;0;\r\n";
        assert_eq!(
            undo(&later, INI, &[wanted()]).0,
            INI.to_owned() + "1=5559876;Bob;2;1764590000;0;\r\n"
        );
    }

    #[test]
    fn an_ini_without_settings_or_final_newline_round_trips() {
        for original in ["", "[Calls]\r\n0=1;a;0;1;0;", "[Calls]\n0=1;a;0;1;0;\n"] {
            let (text, _) = apply(original, &wanted());
            assert!(text.contains("[Settings]"), "{text:?}");
            assert_eq!(undo(&text, original, &[wanted()]).0, original, "{text:?}");
        }
    }

    #[test]
    fn utf16_with_bom_and_utf8_encode_back_to_the_same_bytes() {
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(INI.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        for bytes in [
            utf16,
            INI.as_bytes().to_vec(),
            [b"\xef\xbb\xbf", INI.as_bytes()].concat(),
        ] {
            let ini = IniText::decode(&bytes).unwrap();
            assert_eq!(ini.text, INI);
            assert_eq!(ini.encode(), bytes);
        }
        assert!(
            IniText::decode(&[0xff, 0xfe, 0x00, 0xd8]).is_none(),
            "unpaired surrogate"
        );
        assert!(IniText::decode(b"\xff\xff").is_none());
    }
}
