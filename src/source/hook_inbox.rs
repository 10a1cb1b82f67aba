//! Where `callhook hook` leaves its messages for the daemon, in the state directory.
//!
//! Both sides use this module, so they agree on the place and the format:
//!
//! - `hook.addr`: the loopback address the running daemon listens on (written when it
//!   starts listening, removed by it when it stops). Missing: no daemon, spool at once.
//! - `hook.token`: a secret (64 hex digits) the daemon makes anew each time it starts,
//!   owner-only. Only a program that can read the state directory knows it.
//! - `hook-spool/`: one JSON file per message the daemon could not take; written to a
//!   temporary name and renamed, so the daemon never reads half a file. The daemon takes
//!   them in time order and deletes each once its events are stored. The spool is
//!   owner-only, so its files need no token.
//!
//! All of it lies in the owner-only state directory (see `private`).
//!
//! Over loopback, any local program can connect to a port, and after a crash another
//! account can bind the port `hook.addr` still names. So both ends prove they know the
//! token without sending it, over fresh nonces, before a message moves: the forwarder
//! says [`Hello`] with its nonce; the daemon answers a [`Challenge`]: its nonce and its
//! proof ([`proof`], an HMAC-SHA256 of both nonces keyed by the token); the forwarder
//! checks that proof (a squatter cannot make it, and learns nothing it could replay) and
//! sends its own proof with the message ([`Request`]); the daemon checks it and answers
//! `ok` once the message's events are stored, or `error: ...`. Each step is one JSON
//! line.

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

/// The forwarder's first line: its fresh nonce (hex).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub hello: String,
}

/// The daemon's answer: its fresh nonce and its proof of the token.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    pub nonce: String,
    pub proof: String,
}

/// The forwarder's proof of the token, and the message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub proof: String,
    pub message: HookMessage,
}

/// Who makes a proof: each side's proof covers its role, so one cannot be replayed as
/// the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Daemon,
    Forwarder,
}

/// The proof that `role` knows `token`, over both nonces: HMAC-SHA256, hex.
pub fn proof(token: &str, role: Role, hello: &str, nonce: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    let role = match role {
        Role::Daemon => "callhook-hook daemon",
        Role::Forwarder => "callhook-hook forwarder",
    };
    for part in [role, hello, nonce] {
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
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
    pub(crate) fn announce(&self, address: SocketAddr) -> io::Result<()> {
        crate::private::ensure_dir(&self.state_dir)?;
        write_atomically(&self.state_dir.join(ADDR_FILE), format!("{address}\n").as_bytes())
    }

    /// Takes the address back when the daemon stops, if it is still the one it
    /// announced (`address`).
    pub(crate) fn withdraw(&self, address: SocketAddr) {
        if self.daemon_address() == Some(address) {
            let _ = fs::remove_file(self.state_dir.join(ADDR_FILE));
        }
    }

    /// The token, if the daemon made one and it is this account's secret alone (one
    /// another account wrote or can read proves nothing).
    pub fn token(&self) -> Option<String> {
        let path = self.state_dir.join(TOKEN_FILE);
        if let Err(error) = crate::private::check_secret_file(&path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!("hook token not used: {error}");
            }
            return None;
        }
        let token = fs::read_to_string(path).ok()?;
        let token = token.trim();
        (!token.is_empty()).then(|| token.to_owned())
    }

    /// Makes a new token (the daemon, when it starts): one that leaked before is worth
    /// nothing afterwards. Spooled messages need none.
    pub(crate) fn new_token(&self) -> io::Result<String> {
        crate::private::ensure_dir(&self.state_dir)?;
        let token = random_hex::<32>()?;
        write_atomically(&self.state_dir.join(TOKEN_FILE), token.as_bytes())?;
        Ok(token)
    }

    /// Leaves `message` in the spool for the daemon; durable when this returns.
    pub fn spool(&self, message: &HookMessage) -> io::Result<PathBuf> {
        let dir = self.spool_dir();
        crate::private::ensure_dir(&self.state_dir)?;
        crate::private::ensure_dir(&dir)?;
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
    pub(crate) fn set_aside(path: &Path) -> io::Result<PathBuf> {
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
        let mut file = crate::private::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
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
pub(crate) fn random_hex<const N: usize>() -> io::Result<String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no random numbers: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Compares two tokens in time independent of where they differ.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
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
    fn token_is_new_at_each_start_and_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path().join("state"));
        assert_eq!(inbox.token(), None);
        let token = inbox.new_token().unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(inbox.token().unwrap(), token);
        let next = inbox.new_token().unwrap();
        assert_ne!(next, token);
        assert_eq!(inbox.token().unwrap(), next);
        let token = next;
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
        // Another daemon's address is left alone.
        inbox.withdraw("127.0.0.1:9999".parse().unwrap());
        assert!(inbox.daemon_address().is_some());
        inbox.withdraw("127.0.0.1:4567".parse().unwrap());
        assert_eq!(inbox.daemon_address(), None);
    }

    #[test]
    fn proofs_bind_the_token_the_role_and_both_nonces() {
        let p = proof("t", Role::Daemon, "a", "b");
        assert_eq!(p.len(), 64);
        assert_eq!(p, proof("t", Role::Daemon, "a", "b"));
        assert_ne!(p, proof("u", Role::Daemon, "a", "b"));
        assert_ne!(p, proof("t", Role::Forwarder, "a", "b"));
        assert_ne!(p, proof("t", Role::Daemon, "ab", ""));
    }
}
