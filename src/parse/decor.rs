//! Decorations: the per-line prefix an app's logger writes before each PJSIP line.
//!
//! Apps that embed PJSIP hand its lines to their own logger, which puts its own prefix
//! before each: Android logcat (`01-24 16:45:14.699 7619-7941/pkg I/PJSIP: `, or
//! `01-24 16:45:14.699  7619  7941 I PJSIP   : `), iOS NSLog (`2024-01-24 16:45:14.699
//! App[123:4567] `), CocoaLumberjack, journald/syslog (`Jan 24 16:45:14 host app[1]: `),
//! spdlog (`[08:52:28.999][t:8][p:1][pjsip][debug] `). No list of such formats is kept:
//! the prefix is learned from a line that holds a PJSIP entry behind it, as a *shape*
//! (runs of letters and digits stand for any such run, runs of spaces for any such run,
//! every other byte for itself), so the varying parts (times, thread ids, log levels,
//! column padding) match on every line while the constant ones anchor it.
//!
//! A PJSIP entry is found behind a prefix either by its own time column (`HH:MM:SS.mmm`,
//! then the sender, a space and the thread-switch marker `!` or space), or, when the app
//! switched PJSIP's time off, by its sender column alone (a source file `*.c` or an
//! object such as `tsx0x55c1...`); the time then comes from the prefix. Continuation
//! lines (SIP message text) carry the same prefix in some logs (logcat), are indented by
//! its width in others (Android Studio) or are written bare (NSLog, Lumberjack): the
//! prefix or the indentation is taken off, bare lines pass as they are. A log may mix
//! prefixes of a few loggers; up to [`MAX_SHAPES`] are learned.

use super::log_time::{LogTime, parse_timestamp};

/// Most prefix shapes learned in one log.
const MAX_SHAPES: usize = 4;
/// Lines looked at for a first PJSIP entry before the log is taken as undecorated.
const LEARN_LINES: u64 = 100_000;

/// One element of a prefix shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// A run of ASCII letters and digits, or of non-ASCII bytes (emoji, tags in any
    /// script): any such run matches.
    Word,
    /// A run of spaces: any run matches (at the prefix's end, none too).
    Spaces,
    /// This byte.
    Byte(u8),
}

/// A learned prefix shape.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    tokens: Vec<Token>,
    /// The PJSIP entry behind it has no time column: its time is the prefix's own,
    /// which starts at this token.
    time_token: Option<usize>,
}

/// What a line is, once its decoration is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Undecorated<'a> {
    /// The line without its prefix (or continuation indent).
    pub(crate) bytes: &'a [u8],
    /// The time of an entry whose time came from the prefix (PJSIP's own time column
    /// off); the entry is then all of `bytes`.
    pub(crate) prefix_time: Option<LogTime>,
}

/// The decoration of one log, learned from its lines; see the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Decoration {
    state: State,
    lines_seen: u64,
    /// Length of the last prefix taken off: continuation lines indented by it lose it.
    last_prefix: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    /// No PJSIP entry seen yet.
    #[default]
    Learning,
    /// PJSIP lines start at the line start.
    Plain,
    Prefixed(Vec<Shape>),
}

impl Decoration {
    /// Whether a line with a PJSIP entry was seen (with or without a prefix).
    pub(crate) fn known(&self) -> bool {
        self.state != State::Learning
    }

    /// Whether lines carry a prefix.
    #[cfg(test)]
    fn prefixed(&self) -> bool {
        matches!(self.state, State::Prefixed(_))
    }

    /// Takes the decoration off `line`. `in_message` says the line may be SIP message
    /// text, which never teaches a new prefix.
    #[inline]
    pub(crate) fn strip<'a>(&mut self, line: &'a [u8], in_message: bool) -> Undecorated<'a> {
        // The common case (MicroSIP's own log) costs one comparison a line.
        if matches!(self.state, State::Plain) {
            return Undecorated {
                bytes: line,
                prefix_time: None,
            };
        }
        self.strip_learning(line, in_message)
    }

    fn strip_learning<'a>(&mut self, line: &'a [u8], in_message: bool) -> Undecorated<'a> {
        let bare = Undecorated {
            bytes: line,
            prefix_time: None,
        };
        match &self.state {
            State::Plain => return bare,
            State::Learning => {
                self.lines_seen += 1;
                if self.lines_seen > LEARN_LINES {
                    self.state = State::Plain;
                    return bare;
                }
            }
            State::Prefixed(shapes) => {
                for shape in shapes {
                    if let Some(stripped) = shape.strip(line) {
                        self.last_prefix = line.len() - stripped.bytes.len();
                        return stripped;
                    }
                }
                if self.last_prefix > 0
                    && line.len() >= self.last_prefix
                    && line[..self.last_prefix].iter().all(|&b| b == b' ')
                {
                    return Undecorated {
                        bytes: &line[self.last_prefix..],
                        prefix_time: None,
                    };
                }
            }
        }
        if in_message {
            return bare;
        }
        match learn(line) {
            Some(Learned::Plain) if self.state == State::Learning => {
                self.state = State::Plain;
                bare
            }
            Some(Learned::Prefix(shape)) => {
                let stripped = shape.strip(line);
                match &mut self.state {
                    State::Prefixed(shapes) if shapes.len() < MAX_SHAPES => shapes.push(shape),
                    State::Prefixed(_) => {}
                    state => *state = State::Prefixed(vec![shape]),
                }
                match stripped {
                    Some(stripped) => {
                        self.last_prefix = line.len() - stripped.bytes.len();
                        stripped
                    }
                    None => bare,
                }
            }
            _ => bare,
        }
    }
}

enum Learned {
    Plain,
    Prefix(Shape),
}

/// What `line` teaches: a PJSIP entry at its start, or behind a prefix of this shape.
fn learn(line: &[u8]) -> Option<Learned> {
    if entry_with_time(line) {
        return Some(Learned::Plain);
    }
    // A PJSIP time column behind a prefix.
    for at in boundaries(line) {
        if at > 0 && entry_with_time(&line[at..]) {
            return Some(Learned::Prefix(Shape {
                tokens: tokenize(&line[..at]),
                time_token: None,
            }));
        }
    }
    // Only the sender column, the time in the prefix.
    for at in boundaries(line) {
        if at == 0 || line[at - 1] == b' ' || !entry_without_time(&line[at..]) {
            continue;
        }
        let prefix = &line[..at];
        let tokens = tokenize(prefix);
        let time_token = (0..tokens.len()).find(|&t| {
            let start = token_start(prefix, &tokens, t);
            start
                .is_some_and(|s| (s == 0 || !prefix[s - 1].is_ascii_digit()) && parse_timestamp(&prefix[s..]).is_some())
        })?;
        return Some(Learned::Prefix(Shape {
            tokens,
            time_token: Some(time_token),
        }));
    }
    None
}

/// Offsets where a token starts (and the line's end is not one).
fn boundaries(line: &[u8]) -> impl Iterator<Item = usize> + '_ {
    (0..line.len()).filter(move |&i| i == 0 || class(line[i - 1]) != class(line[i]) || class(line[i]) == Class::Other)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Space,
    Other,
}

fn class(byte: u8) -> Class {
    if byte.is_ascii_alphanumeric() || byte >= 0x80 {
        Class::Word
    } else if byte == b' ' {
        Class::Space
    } else {
        Class::Other
    }
}

fn tokenize(prefix: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < prefix.len() {
        let kind = class(prefix[at]);
        match kind {
            Class::Other => {
                tokens.push(Token::Byte(prefix[at]));
                at += 1;
                continue;
            }
            Class::Word => tokens.push(Token::Word),
            Class::Space => tokens.push(Token::Spaces),
        }
        while at < prefix.len() && class(prefix[at]) == kind {
            at += 1;
        }
    }
    tokens
}

/// Byte offset where token `index` of `tokens` (the tokens of `prefix`) starts.
fn token_start(prefix: &[u8], tokens: &[Token], index: usize) -> Option<usize> {
    let mut at = 0;
    for token in tokens.iter().take(index) {
        at = match_token(prefix, at, *token, false)?;
    }
    Some(at)
}

/// Matches one token at `at`, returning where it ends.
fn match_token(line: &[u8], at: usize, token: Token, last: bool) -> Option<usize> {
    match token {
        Token::Byte(byte) => (line.get(at) == Some(&byte)).then_some(at + 1),
        Token::Word | Token::Spaces => {
            let kind = if token == Token::Word {
                Class::Word
            } else {
                Class::Space
            };
            let run = line[at.min(line.len())..]
                .iter()
                .take_while(|&&b| class(b) == kind)
                .count();
            // A writer may drop the trailing spaces of a prefix before an empty message.
            let empty_ok = last && token == Token::Spaces && at == line.len();
            (run > 0 || empty_ok).then_some(at + run)
        }
    }
}

impl Shape {
    fn strip<'a>(&self, line: &'a [u8]) -> Option<Undecorated<'a>> {
        let mut at = 0;
        let mut time_at = None;
        let count = self.tokens.len();
        for (index, token) in self.tokens.iter().enumerate() {
            if Some(index) == self.time_token {
                time_at = Some(at);
            }
            at = match_token(line, at, *token, index + 1 == count)?;
        }
        let rest = &line[at..];
        let prefix_time = match time_at {
            // The prefix's time belongs to the line only when a PJSIP entry follows;
            // otherwise this is message text behind the prefix.
            Some(time_at) if entry_without_time(rest) => parse_timestamp(&line[time_at..]).map(|(time, _)| time),
            _ => None,
        };
        // Message text behind a prefix that ends before the sender column keeps the
        // space the sender column began with; it is not part of the text.
        let rest = match (self.time_token, prefix_time) {
            (Some(_), None) => rest.strip_prefix(b" ").unwrap_or(rest),
            _ => rest,
        };
        Some(Undecorated {
            bytes: rest,
            prefix_time,
        })
    }
}

/// `HH:MM:SS.mmm sender M...`: a PJSIP time column, spaces, a sender naming something
/// (letters, digits, `_./:-`, at least one letter), one space and the thread-switch
/// marker (`!` or space) and a message.
fn entry_with_time(line: &[u8]) -> bool {
    let Some((_, used)) = parse_timestamp(line) else {
        return false;
    };
    let rest = &line[used..];
    if rest.first() != Some(&b' ') {
        return false;
    }
    let Some((sender, after)) = sender_column(rest) else {
        return false;
    };
    sender.iter().any(u8::is_ascii_alphabetic)
        && sender
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b':' | b'-'))
        && marker_follows(after)
}

/// `   sender M...` without a time column, judged by the sender alone: a source file
/// (`pjsua_core.c`) or a PJSIP object (`tsx0x55c1...`, `inv00A3F5C8`).
pub(crate) fn entry_without_time(line: &[u8]) -> bool {
    let Some((sender, after)) = sender_column(line) else {
        return false;
    };
    marker_follows(after) && is_pjsip_sender(sender)
}

/// Splits `   sender rest` at the space after the sender.
fn sender_column(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = line.iter().position(|&b| b != b' ')?;
    let line = &line[start..];
    let end = memchr::memchr(b' ', line).unwrap_or(line.len());
    Some((&line[..end], &line[end..]))
}

/// One space, then the thread-switch marker and the message.
fn marker_follows(after: &[u8]) -> bool {
    matches!(after, [b' ', b'!' | b' ', _, ..])
}

fn is_pjsip_sender(sender: &[u8]) -> bool {
    let source_file = [&b".c"[..], b".cpp", b".h", b".m", b".mm"].iter().any(|x| {
        sender.len() > x.len()
            && sender.ends_with(x)
            && sender[..sender.len() - x.len()]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
    });
    if source_file {
        return true;
    }
    let letters = sender.iter().take_while(|b| b.is_ascii_lowercase()).count();
    let address = &sender[letters..];
    let hex = address.strip_prefix(b"0x").unwrap_or(address);
    letters > 0 && (6..=16).contains(&hex.len()) && hex.iter().all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str =
        "16:45:14.699           pjsua_core.c  .RX 1229 bytes Request msg INVITE/cseq=1 (rdata0x1) from UDP 1.2.3.4:5:";
    const NO_TIME: &str =
        "          pjsua_core.c  ....TX 1443 bytes Request msg INVITE/cseq=2 (tdta0x7f86) to TLS 1.2.3.4:5061:";

    fn stripped(decoration: &mut Decoration, line: &str) -> (String, Option<u32>) {
        let out = decoration.strip(line.as_bytes(), false);
        (
            String::from_utf8_lossy(out.bytes).into_owned(),
            out.prefix_time.map(|t| t.millis),
        )
    }

    #[test]
    fn plain_logs_stay_plain() {
        let mut decoration = Decoration::default();
        assert_eq!(stripped(&mut decoration, ENTRY).0, ENTRY);
        assert!(decoration.known() && !decoration.prefixed());
        assert_eq!(stripped(&mut decoration, "Via: x").0, "Via: x");
    }

    #[test]
    fn prefixes_before_the_time_column() {
        for (prefix, other) in [
            (
                "01-24 16:45:14.699 7619-7941/org.pjsip.app I/PJSIP: ",
                "01-24 16:45:15.001 7619-7950/org.pjsip.app D/PJSIP: ",
            ),
            (
                "01-24 16:45:14.699  7619  7941 I PJSIP   : ",
                "01-24 16:45:15.001  7619 17941 W PJSIP   : ",
            ),
            (
                "2024-01-24 16:45:14.699 App[123:4567] ",
                "2024-01-24 16:45:15.000 App[123:45a7] ",
            ),
            (
                "2024-01-24 16:45:14.699+0100 App[123:4567] ",
                "2024-01-24 16:45:15.000+0100 App[123:4568] ",
            ),
            ("Jan 24 16:45:14 host app[123]: ", "Jan  4 06:45:14 host app[123]: "),
            (
                "[08:52:28.999][t:8][p:1][pjsip][debug] ",
                "[08:52:29.000][t:12][p:1][pjsip][info] ",
            ),
            ("2024/01/24 16:45:14:699  ", "2024/01/24 16:45:15:000  "),
            ("\u{1F49A} DEBUG   ", "\u{2764}\u{FE0F} ERROR   "),
        ] {
            let mut decoration = Decoration::default();
            assert_eq!(
                stripped(&mut decoration, &format!("{prefix}{ENTRY}")).0,
                ENTRY,
                "{prefix}"
            );
            assert!(decoration.prefixed(), "{prefix}");
            assert_eq!(
                stripped(&mut decoration, &format!("{other}Via: x")).0,
                "Via: x",
                "{other}"
            );
            assert_eq!(stripped(&mut decoration, other).0, "", "{other}");
            assert_eq!(stripped(&mut decoration, "Call-ID: bare").0, "Call-ID: bare");
        }
    }

    #[test]
    fn prefixes_before_the_sender_column() {
        let prefix = "\u{1F49A} DEBUG   10:03:48.820 [VSLEndpoint void logCallBack(int, const char *, int):582] ";
        let mut decoration = Decoration::default();
        let (rest, time) = stripped(&mut decoration, &format!("{prefix}{NO_TIME}"));
        assert_eq!(rest.trim_start(), NO_TIME.trim_start());
        assert_eq!(time, Some(((10 * 60 + 3) * 60 + 48) * 1000 + 820));
        // Bare continuation lines pass; a prefixed line without an entry has no time.
        assert_eq!(stripped(&mut decoration, "Call-ID: x"), ("Call-ID: x".into(), None));
        let other = "\u{1F499} VERBOSE 10:03:49.001 [VSLEndpoint void logCallBack(int, const char *, int):582]";
        assert_eq!(
            stripped(
                &mut decoration,
                &format!("{other}        tsx0x7f860d0b20a8  .State changed")
            )
            .1,
            Some(((10 * 60 + 3) * 60 + 49) * 1000 + 1)
        );
    }

    #[test]
    fn indented_continuation_lines() {
        let prefix = "2023-09-20 09:58:08.472 20476-20521 System.out   com.example.app   I  ";
        let mut decoration = Decoration::default();
        assert_eq!(stripped(&mut decoration, &format!("{prefix}{ENTRY}")).0, ENTRY);
        let indent = " ".repeat(prefix.len());
        assert_eq!(stripped(&mut decoration, &format!("{indent}Via: x")).0, "Via: x");
    }

    #[test]
    fn text_without_entries_teaches_nothing() {
        let mut decoration = Decoration::default();
        for line in [
            "2024-01-24 16:45:14.699 App[123:4567] hello",
            "Jan 24 16:45:14 host app[123]: 12:00:00 x",
            "01-24 16:45:14.699  7619  7941 I PJSIP   : started",
            "random words",
            "",
        ] {
            assert_eq!(stripped(&mut decoration, line).0, line);
        }
        assert!(!decoration.known());
    }

    #[test]
    fn senders() {
        for sender in [
            "pjsua_core.c",
            "call.cpp",
            "pjsua_im.h",
            "tsx0x55c17f91f598",
            "inv00A3F5C8",
            "udp0x1a2b3c",
        ] {
            assert!(is_pjsip_sender(sender.as_bytes()), "{sender}");
        }
        for sender in ["[VSLEndpoint", "host", "7619", "x.c.d", "App[1:2]", "tsx0x1"] {
            assert!(!is_pjsip_sender(sender.as_bytes()), "{sender}");
        }
    }
}
