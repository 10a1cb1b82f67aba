//! Where `callhook hook` leaves its messages for the daemon, in the state directory.
//!
//! Both sides use this module, so they agree on the place and the format:
//!
//! - `hook.addr`: the loopback address the running daemon listens on (written when it
//!   starts listening, removed when it stops). Missing: no daemon, spool at once.
//! - `hook.token`: the per-install secret (64 hex digits, created once, owner-only on
//!   Unix). A message over loopback must carry it: any local program can connect to a
//!   loopback port, only one that can read the state directory can make call events.
//! - `hook-spool/`: one JSON file per message the daemon could not take; written to a
//!   temporary name and renamed, so the daemon never reads half a file. The daemon takes
//!   them in time order and deletes each once its events are stored.
//!
//! Over loopback a message is one JSON line ([`Request`]); the daemon answers `ok` once
//! the message's events are stored, or `error: ...`.

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::parse::hook::HookMessage;

const ADDR_FILE: &str = "hook.addr";
const TOKEN_FILE: &str = "hook.token";
const SPOOL_DIR: &str = "hook-spool";
/// Suffix of spooled messages; anything else in the spool is not read.
const SPOOLED: &str = "json";
/// Suffix a spooled file gets when it cannot be read, so it is kept but not read again.
const UNREADABLE: &str = "bad";
/// The longest request line the daemon reads.
pub const MAX_REQUEST: usize = 8 * 1024;

/// One message over loopback.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub token: String,
    pub message: HookMessage,
}

/// The hook files of one state directory.
#[derive(Debug, Clone)]
pub struct Inbox {
    state_dir: PathBuf,
}

impl Inbox {
    pub fn new(state_dir: impl Into<PathBuf>) -> Inbox {
        Inbox {
            state_dir: state_dir.into(),
        }
    }

    /// The folder of spooled messages.
    pub fn spool_dir(&self) -> PathBuf {
        self.state_dir.join(SPOOL_DIR)
    }

    /// The address of the running daemon, if one said where it listens.
    pub fn daemon_address(&self) -> Option<SocketAddr> {
        fs::read_to_string(self.state_dir.join(ADDR_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Says where the daemon listens (replacing what a crashed daemon left).
    pub fn announce(&self, address: SocketAddr) -> io::Result<()> {
        write_atomically(&self.state_dir.join(ADDR_FILE), format!("{address}\n").as_bytes())
    }

    /// Takes the address back when the daemon stops.
    pub fn withdraw(&self) {
        let _ = fs::remove_file(self.state_dir.join(ADDR_FILE));
    }

    /// The token, if one was made.
    pub fn token(&self) -> Option<String> {
        let token = fs::read_to_string(self.state_dir.join(TOKEN_FILE)).ok()?;
        let token = token.trim();
        (!token.is_empty()).then(|| token.to_owned())
    }

    /// The token, made now if there is none yet.
    pub fn token_or_create(&self) -> io::Result<String> {
        if let Some(token) = self.token() {
            return Ok(token);
        }
        fs::create_dir_all(&self.state_dir)?;
        let token = random_hex::<32>()?;
        let path = self.state_dir.join(TOKEN_FILE);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(token.as_bytes())?;
                file.sync_all()?;
                Ok(token)
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self
                .token()
                .ok_or_else(|| io::Error::other(format!("{} is empty", path.display()))),
            Err(e) => Err(e),
        }
    }

    /// Leaves `message` in the spool for the daemon; durable when this returns.
    pub fn spool(&self, message: &HookMessage) -> io::Result<PathBuf> {
        let dir = self.spool_dir();
        fs::create_dir_all(&dir)?;
        // Time first, so a listing sorted by name is in time order.
        let name = format!(
            "{:015}-{}.{SPOOLED}",
            message.at.timestamp().as_millisecond().max(0),
            safe_name(&message.id)
        );
        let path = dir.join(name);
        let json = serde_json::to_vec(message).map_err(io::Error::other)?;
        write_atomically(&path, &json)?;
        Ok(path)
    }

    /// The spooled messages' files, oldest first.
    pub fn spooled(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.spool_dir()) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == SPOOLED))
            .collect();
        files.sort();
        files
    }

    /// Reads one spooled message.
    pub fn read_spooled(path: &Path) -> Result<HookMessage, String> {
        let bytes = fs::read(path).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("not a hook message: {e}"))
    }

    /// Keeps an unreadable spooled file under another name, out of the way.
    pub fn set_aside(path: &Path) -> io::Result<PathBuf> {
        let aside = path.with_extension(UNREADABLE);
        fs::rename(path, &aside)?;
        Ok(aside)
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over
/// `path`: readers see the old file or the whole new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let result = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Message ids are ours (hex), but a spool file name is made only of safe characters
/// whatever they hold.
fn safe_name(id: &str) -> String {
    id.chars().filter(|c| c.is_ascii_alphanumeric()).take(64).collect()
}

/// `N` random bytes from the operating system, as hex: tokens and message ids.
pub fn random_hex<const N: usize>() -> io::Result<String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no random numbers: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, ms: i64) -> HookMessage {
        HookMessage {
            id: id.to_owned(),
            event: crate::parse::hook::HookEvent::Ring,
            number: "100".to_owned(),
            name: Some("A \"B\"".to_owned()),
            at: jiff::Timestamp::from_millisecond(ms)
                .unwrap()
                .to_zoned_datetime(jiff::tz::TimeZone::UTC),
        }
    }

    #[test]
    fn token_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path().join("state"));
        assert_eq!(inbox.token(), None);
        let token = inbox.token_or_create().unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(inbox.token_or_create().unwrap(), token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("state/hook.token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "token readable by others: {mode:o}");
        }
        assert!(same_token(&token, &token.clone()));
        assert!(!same_token(&token, &token[1..]));
    }

    #[test]
    fn spool_keeps_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path());
        inbox.spool(&message("b", 2_000)).unwrap();
        inbox.spool(&message("a/../x", 1_000)).unwrap();
        let files = inbox.spooled();
        assert_eq!(files.len(), 2);
        assert_eq!(Inbox::read_spooled(&files[0]).unwrap().id, "a/../x");
        assert_eq!(Inbox::read_spooled(&files[1]).unwrap().id, "b");
        fs::write(&files[0], b"{half").unwrap();
        assert!(
            Inbox::read_spooled(&files[0])
                .unwrap_err()
                .contains("not a hook message")
        );
        Inbox::set_aside(&files[0]).unwrap();
        assert_eq!(inbox.spooled().len(), 1);
    }

    #[test]
    fn address_is_announced_and_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path());
        assert_eq!(inbox.daemon_address(), None);
        inbox.announce("127.0.0.1:4567".parse().unwrap()).unwrap();
        assert_eq!(inbox.daemon_address(), Some("127.0.0.1:4567".parse().unwrap()));
        inbox.withdraw();
        assert_eq!(inbox.daemon_address(), None);
    }
}
