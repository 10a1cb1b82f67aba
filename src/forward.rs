//! `callhook hook EVENT NUMBER [NAME]`: what MicroSIP starts on a call event.
//!
//! It must return at once (MicroSIP may wait for it) and never lose the event: the
//! message goes to the running daemon over loopback, once the daemon proved it knows
//! the token (and this side proved it too; the token itself never crosses the wire,
//! see `source::hook_inbox`), and counts as delivered when the daemon answers that it
//! stored it. When no daemon is running, it cannot prove the token (a squatter on its
//! old port), or it does not answer within [`ANSWER_WITHIN`], the message is spooled in
//! the owner-only state directory instead, where the daemon takes it up when it
//! (re)starts or on its next look. A message that went both ways (the answer was late)
//! has one id, and the daemon drops the second copy.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::parse::hook::{HookEvent, HookMessage, number_of};
use crate::source::hook_inbox::{Challenge, Hello, Inbox, Request, Role, proof, random_hex, same_token};

/// How long the daemon may take to connect and store the message before the message is
/// spooled instead. Storing takes a few milliseconds; a disk stall takes longer, and
/// then spooling is faster than waiting.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(40);

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// The running daemon stored it.
    Delivered,
    /// It waits in the spool (the path) for the daemon.
    Spooled(PathBuf),
}

/// Builds the message for one hook program start: a fresh id and the time now.
pub fn message(event: HookEvent, number: &str, name: Option<&str>) -> io::Result<HookMessage> {
    Ok(HookMessage {
        id: random_hex::<16>()?,
        event,
        number: number_of(number),
        name: name.map(str::to_owned).filter(|n| !n.trim().is_empty()),
        at: jiff::ZonedDateTime::now(),
    })
}

/// Hands `message` to the daemon of `state_dir`, or spools it; see the module docs.
/// Fails only when the message could be neither delivered nor spooled.
pub fn forward(state_dir: &Path, message: &HookMessage) -> io::Result<Forwarded> {
    let inbox = Inbox::new(state_dir);
    if let (Some(address), Some(token)) = (inbox.daemon_address(), inbox.token()) {
        match deliver(address, token, message) {
            Ok(()) => return Ok(Forwarded::Delivered),
            Err(error) => tracing::debug!(%address, %error, "daemon did not take the message; spooling it"),
        }
    }
    inbox.spool(message).map(Forwarded::Spooled)
}

/// The exchange of `source::hook_inbox`, all within [`ANSWER_WITHIN`]: hello, the
/// daemon's proof checked, our proof and the message, `ok`.
fn deliver(address: SocketAddr, token: String, message: &HookMessage) -> io::Result<()> {
    if !address.ip().is_loopback() {
        return Err(io::Error::other(format!("{address} is not a loopback address")));
    }
    let deadline = Instant::now() + ANSWER_WITHIN;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))
    };
    let mut stream = TcpStream::connect_timeout(&address, remaining()?)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(remaining()?))?;
    let hello = random_hex::<32>()?;
    send_line(&mut stream, &Hello { hello: hello.clone() })?;
    stream.set_read_timeout(Some(remaining()?))?;
    let mut answers = BufReader::new(io::Read::take(stream.try_clone()?, 4096));
    let mut line = String::new();
    answers.read_line(&mut line)?;
    let challenge: Challenge = serde_json::from_str(&line).map_err(|_| {
        io::Error::other(format!(
            "{address} answered {:?}, not a callhook daemon",
            line.trim_end()
        ))
    })?;
    if !same_token(&challenge.proof, &proof(&token, Role::Daemon, &hello, &challenge.nonce)) {
        // Not our daemon (another account on its old port?): it gets nothing.
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{address} does not know the token: not our daemon"),
        ));
    }
    stream.set_write_timeout(Some(remaining()?))?;
    let request = Request {
        proof: proof(&token, Role::Forwarder, &hello, &challenge.nonce),
        message: message.clone(),
    };
    send_line(&mut stream, &request)?;
    stream.set_read_timeout(Some(remaining()?))?;
    let mut answer = String::new();
    answers.read_line(&mut answer)?;
    match answer.trim_end() {
        "ok" => Ok(()),
        "" => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection",
        )),
        other => Err(io::Error::other(format!("the daemon answered {other:?}"))),
    }
}

fn send_line(stream: &mut TcpStream, value: &impl serde::Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}
