//! One SIP message (RFC 3261) as logged by PJSIP: start line, headers, body.
//!
//! Takes the raw bytes of one message (possibly cut short by the logger) and hands on
//! the few facts the call tracker needs: method or status, Call-ID, CSeq, From/To user
//! parts and display names, asserted identity, Refer-To. Header names match in any
//! letter case and in compact form (`i`, `f`, `t`, ...). Everything here is attacker
//! controlled, so nothing panics and nothing is trusted beyond being text.

use std::borrow::Cow;

use thiserror::Error;

/// A SIP method. Only those the tracker reacts to get a variant of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Refer,
    Notify,
    Update,
    Other(String),
}

impl Method {
    /// Reads a method name; SIP method names are case-sensitive, but logs from odd
    /// stacks are not, so any case is taken.
    pub fn parse(name: &[u8]) -> Method {
        let known = [
            (&b"INVITE"[..], Method::Invite),
            (b"ACK", Method::Ack),
            (b"BYE", Method::Bye),
            (b"CANCEL", Method::Cancel),
            (b"REFER", Method::Refer),
            (b"NOTIFY", Method::Notify),
            (b"UPDATE", Method::Update),
        ];
        for (text, method) in known {
            if name.eq_ignore_ascii_case(text) {
                return method;
            }
        }
        Method::Other(String::from_utf8_lossy(name).into_owned())
    }
}

/// A request's method or a response's status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method },
    Response { code: u16 },
}

/// A `name-addr` or `addr-spec` header value (From, To, P-Asserted-Identity, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name with SIP quoting undone; `None` when absent or empty.
    pub display: Option<String>,
    /// User part of a `sip:`/`sips:` URI, or the number of a `tel:` URI,
    /// percent-decoded, without user parameters.
    pub user: Option<String>,
    /// The `tag` header parameter.
    pub tag: Option<String>,
}

/// The facts of one SIP message that call tracking needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: Method,
    pub from: NameAddr,
    pub to: NameAddr,
    /// Whether the To header carries a tag (the dialog exists: a re-INVITE, not a new
    /// call). Set whether or not the parties were read; when they were, it is
    /// `to.tag.is_some()`.
    pub to_tagged: bool,
    /// First P-Asserted-Identity, else Remote-Party-ID.
    pub asserted: Option<NameAddr>,
    /// Refer-To (REFER): the target user and the Call-ID named by its `Replaces`.
    pub refer_to: Option<ReferTo>,
    /// Status code of a `message/sipfrag` body (NOTIFY of a transfer's progress).
    pub sipfrag_status: Option<u16>,
}

/// The Refer-To header of a REFER.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferTo {
    pub user: Option<String>,
    /// Call-ID of the dialog an attended transfer replaces.
    pub replaces_call_id: Option<String>,
}

/// Why a SIP message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SipError {
    #[error("message is empty")]
    Empty,
    #[error("start line is neither a request nor a response")]
    BadStartLine,
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed CSeq header")]
    BadCSeq,
}

impl SipMessage {
    /// Reads one message. Lines may end in CRLF or LF (or CR CR LF where the logger
    /// added its own CR); a message cut short keeps whatever headers arrived.
    pub fn parse(raw: &[u8]) -> Result<SipMessage, SipError> {
        Ok(Scanned::scan(raw, None)?.build())
    }

    /// The status code, for a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The method, for a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
}

/// One message's headers found and checked, their values not yet read into strings:
/// [`SipMessage::parse`] builds a message from it, and the trace parser looks at it to
/// bind a message to its call while the message itself is built later, on another
/// thread (replay). A message scans without error exactly when it parses.
#[derive(Debug)]
pub(crate) struct Scanned<'a> {
    pub(crate) start: StartLine,
    /// The Call-ID, trimmed; empty only when read leniently (a cut message).
    call_id: Cow<'a, str>,
    cseq: (u32, Method),
    /// The last of each header; `None` only when
    /// read leniently.
    from: Option<Cow<'a, [u8]>>,
    to: Option<Cow<'a, [u8]>>,
    /// The first of each.
    asserted: Option<Cow<'a, [u8]>>,
    party_id: Option<Cow<'a, [u8]>>,
    refer_to: Option<Cow<'a, [u8]>>,
    sipfrag_status: Option<u16>,
}

impl<'a> Scanned<'a> {
    /// Finds the headers of `raw`. `cut` reads a message the logger cut short, keeping
    /// what arrived: a missing Call-ID is left empty (for the caller to find elsewhere),
    /// a missing CSeq is `cut`'s (the log line names it), missing From and To are empty.
    pub(crate) fn scan(raw: &'a [u8], cut: Option<(u32, Method)>) -> Result<Scanned<'a>, SipError> {
        let lenient = cut.is_some();
        let mut lines = HeaderLines::new(raw);
        let first = lines.next_raw().ok_or(SipError::Empty)?;
        let start = parse_start_line(first)?;

        let mut call_id = None;
        let mut cseq = None;
        let mut from = None;
        let mut to = None;
        let mut asserted = None;
        let mut party_id = None;
        let mut refer_to = None;
        let mut sipfrag = false;
        for (name, value) in lines.by_ref() {
            match canonical_header(name) {
                Some(Header::CallId) => call_id = Some(value),
                Some(Header::CSeq) => cseq = Some(parse_cseq(&value)?),
                Some(Header::From) => from = Some(value),
                Some(Header::To) => to = Some(value),
                Some(Header::AssertedIdentity) if asserted.is_none() => asserted = Some(value),
                Some(Header::RemotePartyId) if party_id.is_none() => party_id = Some(value),
                Some(Header::ReferTo) => refer_to = Some(value),
                Some(Header::ContentType) => sipfrag = is_sipfrag(&value),
                _ => {}
            }
        }
        let sipfrag_status = if sipfrag {
            lines.body().and_then(sipfrag_status)
        } else {
            None
        };
        let call_id = match call_id {
            Some(Cow::Borrowed(value)) => trimmed_text(value),
            Some(Cow::Owned(value)) => Cow::Owned(trimmed_text(&value).into_owned()),
            None => Cow::Borrowed(""),
        };
        if call_id.is_empty() && !lenient {
            return Err(SipError::MissingHeader("Call-ID"));
        }
        let cseq = cseq.or(cut).ok_or(SipError::MissingHeader("CSeq"))?;
        if from.is_none() && !lenient {
            return Err(SipError::MissingHeader("From"));
        }
        if to.is_none() && !lenient {
            return Err(SipError::MissingHeader("To"));
        }
        Ok(Scanned {
            start,
            call_id,
            cseq,
            from,
            to,
            asserted,
            party_id,
            refer_to,
            sipfrag_status,
        })
    }

    /// The Call-ID; empty only for a message read leniently that had none.
    pub(crate) fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Whether the To header carries a tag (what [`NameAddr::tag`] of `to` would hold).
    pub(crate) fn to_tagged(&self) -> bool {
        self.to.as_deref().and_then(to_tag).is_some()
    }

    /// The message, its header values read.
    pub(crate) fn build(self) -> SipMessage {
        self.build_with(Parties::Read)
    }

    /// The message, its parties (From, To, asserted identity) read or not: see
    /// [`Parties`].
    pub(crate) fn build_with(self, parties: Parties) -> SipMessage {
        let to_tagged = self.to_tagged();
        let (cseq, cseq_method) = self.cseq;
        let name_addr = |value: Option<Cow<'_, [u8]>>| value.map(|v| parse_name_addr(&v)).unwrap_or_default();
        let listed = |value: Option<Cow<'_, [u8]>>| value.map(|v| parse_name_addr(first_of_list(&v)));
        let (from, to, asserted) = match parties {
            Parties::Read => (
                name_addr(self.from),
                name_addr(self.to),
                listed(self.asserted).or_else(|| listed(self.party_id)),
            ),
            Parties::ToTagOnly => (NameAddr::default(), NameAddr::default(), None),
        };
        SipMessage {
            start: self.start,
            call_id: self.call_id.into_owned(),
            cseq,
            cseq_method,
            from,
            to,
            to_tagged,
            asserted,
            refer_to: self.refer_to.map(|v| parse_refer_to(&v)),
            sipfrag_status: self.sipfrag_status,
        }
    }
}

/// Which of a message's parties [`Scanned::build_with`] reads.
///
/// The call tracker reads From, To and the asserted identity only from a message that
/// may start a call (its Call-ID neither open nor ended); of every other message it
/// only asks whether To has a tag. In a replay most messages belong to a call already
/// open, and reading their parties (display names, users, tags: up to six strings) was
/// about a third of the tracking thread's `malloc` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parties {
    /// From, To and the asserted identity, whole.
    Read,
    /// `from`, `to` and `asserted` left empty: only [`SipMessage::to_tagged`] is set.
    ToTagOnly,
}

/// The `tag` parameter of a To (or From) header value.
fn to_tag(value: &[u8]) -> Option<&[u8]> {
    header_param(name_addr_parts(value).params, b"tag")
}

/// A [`Scanned`] message whose header values were copied into a buffer shared by many
/// (each value a range of it): what replay's parser hands to the tracking thread, which
/// builds the message from it without looking at the message again.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedCopy {
    start: StartLine,
    /// The trimmed Call-ID, as text.
    call_id: Span,
    cseq: (u32, Method),
    from: Option<Span>,
    to: Option<Span>,
    asserted: Option<Span>,
    party_id: Option<Span>,
    refer_to: Option<Span>,
    sipfrag_status: Option<u16>,
}

/// Where a value is in a [`ScannedCopy`]'s buffer: start and end.
type Span = (u32, u32);

impl Scanned<'_> {
    /// Copies the header values into `buffer` (at most 4 GiB long).
    pub(crate) fn copy_into(self, buffer: &mut Vec<u8>) -> ScannedCopy {
        let mut copy = |value: &[u8]| {
            let start = buffer.len() as u32;
            buffer.extend_from_slice(value);
            (start, buffer.len() as u32)
        };
        ScannedCopy {
            call_id: copy(self.call_id.as_bytes()),
            from: self.from.as_deref().map(&mut copy),
            to: self.to.as_deref().map(&mut copy),
            asserted: self.asserted.as_deref().map(&mut copy),
            party_id: self.party_id.as_deref().map(&mut copy),
            refer_to: self.refer_to.as_deref().map(&mut copy),
            start: self.start,
            cseq: self.cseq,
            sipfrag_status: self.sipfrag_status,
        }
    }
}

impl ScannedCopy {
    /// The message scanned, its header values in `buffer`, the one they were copied
    /// into; `None` when given another (too short) buffer.
    pub(crate) fn values<'a>(&self, buffer: &'a [u8]) -> Option<Scanned<'a>> {
        let value = |span: Span| buffer.get(span.0 as usize..span.1 as usize);
        let optional = |span: Option<Span>| match span {
            Some(span) => value(span).map(|v| Some(Cow::Borrowed(v))),
            None => Some(None),
        };
        let call_id = std::str::from_utf8(value(self.call_id)?).ok()?;
        let scanned = Scanned {
            start: self.start.clone(),
            call_id: Cow::Borrowed(call_id),
            cseq: self.cseq.clone(),
            from: optional(self.from)?,
            to: optional(self.to)?,
            asserted: optional(self.asserted)?,
            party_id: optional(self.party_id)?,
            refer_to: optional(self.refer_to)?,
            sipfrag_status: self.sipfrag_status,
        };
        Some(scanned)
    }
}

/// A Call-ID header value as text, trimmed.
fn trimmed_text(value: &[u8]) -> Cow<'_, str> {
    match text(value) {
        Cow::Borrowed(valid) => Cow::Borrowed(valid.trim()),
        Cow::Owned(lossy) => Cow::Owned(lossy.trim().to_owned()),
    }
}

/// Whether a Content-Type value names `message/sipfrag` (any letter case), read
/// without a lowercased copy.
fn is_sipfrag(value: &[u8]) -> bool {
    const SIPFRAG: &[u8] = b"message/sipfrag";
    let value = text(value);
    let value = value.trim().as_bytes();
    value.len() >= SIPFRAG.len() && value[..SIPFRAG.len()].eq_ignore_ascii_case(SIPFRAG)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    CallId,
    CSeq,
    From,
    To,
    AssertedIdentity,
    RemotePartyId,
    ReferTo,
    ContentType,
}

fn canonical_header(name: &[u8]) -> Option<Header> {
    // By length first: most header lines (Via, Contact, Allow, ...) are none of these,
    // and each line of each kept message is looked up.
    let candidates: &[(&[u8], Header)] = match name.len() {
        1 => &[
            (b"i", Header::CallId),
            (b"f", Header::From),
            (b"t", Header::To),
            (b"r", Header::ReferTo),
            (b"c", Header::ContentType),
        ],
        2 => &[(b"to", Header::To)],
        4 => &[(b"cseq", Header::CSeq), (b"from", Header::From)],
        7 => &[(b"call-id", Header::CallId)],
        8 => &[(b"refer-to", Header::ReferTo)],
        12 => &[(b"content-type", Header::ContentType)],
        15 => &[(b"remote-party-id", Header::RemotePartyId)],
        19 => &[(b"p-asserted-identity", Header::AssertedIdentity)],
        _ => return None,
    };
    candidates
        .iter()
        .find(|(known, _)| name.eq_ignore_ascii_case(known))
        .map(|&(_, header)| header)
}

/// Iterates over the header lines of a message, joining folded continuation lines,
/// and remembers where the body starts.
struct HeaderLines<'a> {
    rest: &'a [u8],
    body: Option<&'a [u8]>,
}

impl<'a> HeaderLines<'a> {
    fn new(raw: &'a [u8]) -> Self {
        HeaderLines { rest: raw, body: None }
    }

    /// The next physical line without its line ending, or `None` at the end.
    fn next_raw(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match memchr::memchr(b'\n', self.rest) {
            Some(end) => (&self.rest[..end], &self.rest[end + 1..]),
            None => (self.rest, &self.rest[self.rest.len()..]),
        };
        self.rest = rest;
        Some(trim_cr(line))
    }

    /// The body, once all headers have been read; `None` when there is none.
    fn body(&self) -> Option<&'a [u8]> {
        self.body.filter(|b| !b.is_empty())
    }
}

impl<'a> Iterator for HeaderLines<'a> {
    type Item = (&'a [u8], Cow<'a, [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.body.is_some() {
                return None;
            }
            let line = self.next_raw()?;
            if line.is_empty() {
                self.body = Some(self.rest);
                return None;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                continue; // not a header; a cut or garbled line
            };
            let name = trim(&line[..colon]);
            let mut value = Cow::Borrowed(trim(&line[colon + 1..]));
            // Folded continuation lines (RFC 3261 7.3.1) start with white space.
            while matches!(self.rest.first(), Some(b' ' | b'\t')) {
                let more = self.next_raw().unwrap_or_default();
                let joined = value.to_mut();
                joined.push(b' ');
                joined.extend_from_slice(trim(more));
            }
            return Some((name, value));
        }
    }
}

fn trim_cr(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r'] = line {
        line = rest;
    }
    line
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn text(bytes: &[u8]) -> Cow<'_, str> {
    // `from_utf8` checks ASCII a word at a time; `from_utf8_lossy` walks chunks even
    // when there is nothing to replace, which every header value of every message paid.
    match std::str::from_utf8(bytes) {
        Ok(valid) => Cow::Borrowed(valid),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// [`text`] of bytes already owned: valid UTF-8 (nearly always) becomes the string
/// without a second allocation and copy.
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| text(e.as_bytes()).into_owned())
}

fn parse_start_line(line: &[u8]) -> Result<StartLine, SipError> {
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let first = parts.next().ok_or(SipError::BadStartLine)?;
    if first.len() >= 4 && first[..4].eq_ignore_ascii_case(b"SIP/") {
        let code = parts
            .next()
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (100..700).contains(c))
            .ok_or(SipError::BadStartLine)?;
        return Ok(StartLine::Response { code });
    }
    let _uri = parts.next().ok_or(SipError::BadStartLine)?;
    let version = parts.next().ok_or(SipError::BadStartLine)?;
    if !(version.len() >= 4 && version[..4].eq_ignore_ascii_case(b"SIP/")) {
        return Err(SipError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: Method::parse(first),
    })
}

/// The CSeq a PJSIP message description names: `INVITE/cseq=5` or `200/INVITE/cseq=5`.
pub(crate) fn cseq_of_description(description: &[u8]) -> Option<(u32, Method)> {
    let at = memchr::memmem::rfind(description, b"/cseq=")?;
    let number = std::str::from_utf8(&description[at + 6..]).ok()?.trim().parse().ok()?;
    let before = &description[..at];
    let method = match memchr::memrchr(b'/', before) {
        Some(slash) => &before[slash + 1..],
        None => before,
    };
    (!method.is_empty()).then(|| (number, Method::parse(method)))
}

fn parse_cseq(value: &[u8]) -> Result<(u32, Method), SipError> {
    let mut parts = value.split(|b| b.is_ascii_whitespace()).filter(|p| !p.is_empty());
    let number = parts
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or(SipError::BadCSeq)?;
    let method = parts.next().ok_or(SipError::BadCSeq)?;
    Ok((number, Method::parse(method)))
}

/// The first element of a comma-separated header value, honouring quotes and brackets
/// (a display name may contain commas: `"Müller, Jörg" <sip:...>`).
fn first_of_list(value: &[u8]) -> &[u8] {
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            b',' if !in_quotes && !in_angle => return &value[..i],
            _ => {}
        }
        i += 1;
    }
    value
}

/// Reads `"Display" <uri>;params`, `Display <uri>;params` or `uri;params`.
pub(crate) fn parse_name_addr(value: &[u8]) -> NameAddr {
    let parts = name_addr_parts(value);
    let display = match parts.display {
        Display::Quoted(content) => Some(unescape(content)),
        Display::Token(token) => Some(text(token).split_whitespace().collect::<Vec<_>>().join(" ")),
        Display::Absent => None,
    };
    NameAddr {
        display: display.filter(|d| !d.trim().is_empty()),
        user: uri_user(parts.uri),
        tag: header_param(parts.params, b"tag").map(|t| text(t).into_owned()),
    }
}

/// A name-addr header value cut in its parts, nothing copied.
struct NameAddrParts<'a> {
    display: Display<'a>,
    uri: &'a [u8],
    params: &'a [u8],
}

/// The display name of a name-addr as written.
enum Display<'a> {
    /// Between the quotes, escapes not yet undone.
    Quoted(&'a [u8]),
    /// Before `<`, trimmed.
    Token(&'a [u8]),
    Absent,
}

fn name_addr_parts(value: &[u8]) -> NameAddrParts<'_> {
    let value = trim(value);
    let mut display = Display::Absent;
    let mut rest = value;
    if rest.first() == Some(&b'"') {
        let (content, after) = split_quoted(&rest[1..]);
        display = Display::Quoted(content);
        rest = after;
    }
    let (uri, params) = if let Some(open) = memchr::memchr(b'<', rest) {
        if matches!(display, Display::Absent) {
            display = Display::Token(trim(&rest[..open]));
        }
        let inside = &rest[open + 1..];
        match memchr::memchr(b'>', inside) {
            Some(close) => (&inside[..close], &inside[close + 1..]),
            None => (inside, &inside[inside.len()..]),
        }
    } else {
        // addr-spec: parameters after the URI belong to the header, not the URI.
        let rest = trim(rest);
        match memchr::memchr(b';', rest) {
            Some(semi) => (&rest[..semi], &rest[semi..]),
            None => (rest, &rest[rest.len()..]),
        }
    };
    NameAddrParts { display, uri, params }
}

/// Splits a quoted string whose opening quote was already consumed into its content
/// (escapes still in) and what follows the closing quote.
fn split_quoted(after_quote: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < after_quote.len() {
        match after_quote[i] {
            b'\\' if i + 1 < after_quote.len() => i += 2,
            b'"' => return (&after_quote[..i], &after_quote[i + 1..]),
            _ => i += 1,
        }
    }
    (after_quote, &after_quote[after_quote.len()..])
}

/// Undoes SIP quoting in a quoted string's content ([`split_quoted`]): a backslash
/// stands for the byte after it.
fn unescape(content: &[u8]) -> String {
    let mut out = Vec::with_capacity(content.len());
    let mut i = 0;
    while i < content.len() {
        match content[i] {
            b'\\' if i + 1 < content.len() => {
                out.push(content[i + 1]);
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    into_text(out)
}

/// The user part of a `sip:`, `sips:` or `tel:` URI, percent-decoded, without user
/// parameters (`;phone-context=...`) or password.
pub(crate) fn uri_user(uri: &[u8]) -> Option<String> {
    let uri = trim(uri);
    let colon = memchr::memchr(b':', uri)?;
    let scheme = &uri[..colon];
    let rest = &uri[colon + 1..];
    let user = if scheme.eq_ignore_ascii_case(b"tel") {
        let end = rest.iter().position(|&b| b == b';' || b == b'?').unwrap_or(rest.len());
        &rest[..end]
    } else if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
        let at = memchr::memchr(b'@', rest)?;
        let user = &rest[..at];
        let end = user.iter().position(|&b| b == b';' || b == b':').unwrap_or(user.len());
        &user[..end]
    } else {
        return None;
    };
    let decoded = percent_decode(user);
    (!decoded.is_empty()).then_some(decoded)
}

fn percent_decode(bytes: &[u8]) -> String {
    if memchr::memchr(b'%', bytes).is_none() {
        return text(bytes).into_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    into_text(out)
}

/// The value of header parameter `name` in `;a=b;tag=xyz`.
fn header_param<'a>(params: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    params.split(|&b| b == b';').find_map(|param| {
        let param = trim(param);
        let eq = memchr::memchr(b'=', param)?;
        trim(&param[..eq])
            .eq_ignore_ascii_case(name)
            .then(|| trim(&param[eq + 1..]))
    })
}

fn parse_refer_to(value: &[u8]) -> ReferTo {
    let value = trim(first_of_list(value));
    let uri = match memchr::memchr(b'<', value) {
        Some(open) => {
            let inside = &value[open + 1..];
            &inside[..memchr::memchr(b'>', inside).unwrap_or(inside.len())]
        }
        None => value,
    };
    let (target, headers) = match memchr::memchr(b'?', uri) {
        Some(q) => (&uri[..q], &uri[q + 1..]),
        None => (uri, &uri[uri.len()..]),
    };
    let replaces_call_id = headers.split(|&b| b == b'&').find_map(|h| {
        let eq = memchr::memchr(b'=', h)?;
        if !h[..eq].eq_ignore_ascii_case(b"replaces") {
            return None;
        }
        let decoded = percent_decode(&h[eq + 1..]);
        let call_id = decoded.split(';').next().unwrap_or_default().trim().to_owned();
        (!call_id.is_empty()).then_some(call_id)
    });
    ReferTo {
        user: uri_user(target),
        replaces_call_id,
    }
}

/// The status code in a `message/sipfrag` body such as `SIP/2.0 200 OK`.
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let line = trim_cr(body.split(|&b| b == b'\n').next()?);
    match parse_start_line(line).ok()? {
        StartLine::Response { code } => Some(code),
        StartLine::Request { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> SipMessage {
        SipMessage::parse(text.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn invite_with_display_name() {
        let m = msg("INVITE sip:101@127.0.0.1:5160 SIP/2.0\n\
            Via: SIP/2.0/UDP 127.0.0.1:5170;branch=z9hG4bK1\n\
            From: \"Alice Example\" <sip:5552001@127.0.0.1>;tag=abc\n\
            To: sip:101@127.0.0.1\n\
            Call-ID: Ms4y0Y55\n\
            CSeq: 31760 INVITE\n\
            Content-Length: 0\n\n");
        assert_eq!(m.start, StartLine::Request { method: Method::Invite });
        assert_eq!(m.call_id, "Ms4y0Y55");
        assert_eq!((m.cseq, m.cseq_method.clone()), (31760, Method::Invite));
        assert_eq!(m.from.display.as_deref(), Some("Alice Example"));
        assert_eq!(m.from.user.as_deref(), Some("5552001"));
        assert_eq!(m.from.tag.as_deref(), Some("abc"));
        assert_eq!(m.to.user.as_deref(), Some("101"));
        assert_eq!(m.to.tag, None);
    }

    #[test]
    fn compact_headers_any_case() {
        let m = msg("SIP/2.0 180 Ringing\n\
            v: SIP/2.0/UDP x\n\
            f: <sip:a@h>;tag=1\n\
            T: Bob <sip:%2B4930@h;user=phone>;TAG=2\n\
            I: cid-1\n\
            cseq: 7 invite\n\n");
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.call_id, "cid-1");
        assert_eq!(m.cseq_method, Method::Invite);
        assert_eq!(m.to.user.as_deref(), Some("+4930"));
        assert_eq!(m.to.display.as_deref(), Some("Bob"));
        assert_eq!(m.to.tag.as_deref(), Some("2"));
        assert_eq!(m.from.display, None);
    }

    #[test]
    fn hostile_display_names_are_unquoted_not_interpreted() {
        let cases = [
            (r#""a \"quoted\" name" <sip:1@h>"#, r#"a "quoted" name"#),
            (r#""back\\slash" <sip:1@h>"#, r"back\slash"),
            (r#""$(rm -rf /)" <sip:1@h>"#, "$(rm -rf /)"),
            (r#""{{ 7*7 }}" <sip:1@h>"#, "{{ 7*7 }}"),
            ("\"M\u{fc}ller, J\u{f6}rg\" <sip:1@h>", "Müller, Jörg"),
            ("\"\u{202E}evil\" <sip:1@h>", "\u{202E}evil"),
            (r#""unterminated <sip:1@h>"#, "unterminated <sip:1@h>"),
        ];
        for (header, want) in cases {
            let na = parse_name_addr(header.as_bytes());
            assert_eq!(na.display.as_deref(), Some(want), "{header}");
        }
    }

    #[test]
    fn uri_forms() {
        assert_eq!(uri_user(b"sip:101@h:5060;transport=tcp").as_deref(), Some("101"));
        assert_eq!(uri_user(b"sips:alice:pw@h").as_deref(), Some("alice"));
        assert_eq!(uri_user(b"tel:+4930123;phone-context=x").as_deref(), Some("+4930123"));
        assert_eq!(uri_user(b"SIP:0049;npdi@h").as_deref(), Some("0049"));
        assert_eq!(uri_user(b"sip:h.example.com"), None);
        assert_eq!(uri_user(b"http://x"), None);
        assert_eq!(uri_user(b"sip:%@h").as_deref(), Some("%"));
        assert_eq!(uri_user(b"sip:%4@h").as_deref(), Some("%4"));
    }

    #[test]
    fn addr_spec_params_belong_to_header() {
        let na = parse_name_addr(b"sip:5551004@127.0.0.1;tag=ut06");
        assert_eq!(na.user.as_deref(), Some("5551004"));
        assert_eq!(na.tag.as_deref(), Some("ut06"));
        assert_eq!(na.display, None);
    }

    #[test]
    fn asserted_identity_preferred_over_party_id() {
        let m = msg("INVITE sip:1@h SIP/2.0\n\
            Remote-Party-ID: \"R\" <sip:222@h>;party=calling\n\
            P-Asserted-Identity: \"Real, Name\" <sip:+111@h>, <tel:+111>\n\
            From: <sip:anonymous@h>;tag=1\nTo: <sip:1@h>\ni: c\nCSeq: 1 INVITE\n\n");
        let pai = m.asserted.unwrap();
        assert_eq!(pai.user.as_deref(), Some("+111"));
        assert_eq!(pai.display.as_deref(), Some("Real, Name"));
    }

    #[test]
    fn refer_to_with_replaces() {
        let m = msg("REFER sip:1@h SIP/2.0\n\
            From: <sip:a@h>;tag=1\nTo: <sip:b@h>;tag=2\nCall-ID: x\nCSeq: 3 REFER\n\
            Refer-To: <sip:5557@127.0.0.1?Replaces=abc-123%3Bto-tag%3Dt1%3Bfrom-tag%3Df1>\n\n");
        let r = m.refer_to.unwrap();
        assert_eq!(r.user.as_deref(), Some("5557"));
        assert_eq!(r.replaces_call_id.as_deref(), Some("abc-123"));
    }

    #[test]
    fn sipfrag_notify_body() {
        let m = msg("NOTIFY sip:1@h SIP/2.0\n\
            From: <sip:a@h>;tag=1\nTo: <sip:b@h>;tag=2\nCall-ID: x\nCSeq: 4 NOTIFY\n\
            Event: refer\nContent-Type: message/sipfrag;version=2.0\n\nSIP/2.0 603 Declined\n");
        assert_eq!(m.sipfrag_status, Some(603));
    }

    #[test]
    fn folded_headers_and_missing_parts() {
        let m = msg("BYE sip:1@h SIP/2.0\nFrom: <sip:a@h>\n ;tag=1\nTo: <sip:b@h>\nCall-ID: y\nCSeq: 9 BYE\n");
        assert_eq!(m.from.tag.as_deref(), Some("1"));
        assert_eq!(
            SipMessage::parse(b"INVITE sip:1@h SIP/2.0\r\nFrom: <sip:a@h>\r\n"),
            Err(SipError::MissingHeader("Call-ID"))
        );
        assert_eq!(SipMessage::parse(b""), Err(SipError::Empty));
        assert_eq!(SipMessage::parse(b"garbage\r\n"), Err(SipError::BadStartLine));
        assert_eq!(SipMessage::parse(b"SIP/2.0 99999 X\r\n"), Err(SipError::BadStartLine));
    }

    #[test]
    fn never_panics_on_bytes() {
        for raw in [
            &b"SIP/2.0"[..],
            b"SIP/"[..].as_ref(),
            b"INVITE a SIP/2.0\nFrom: \"\\",
            b"INVITE a SIP/2.0\nTo: <\nFrom: \"\nCall-ID:\nCSeq: x",
            b"\xff\xfe\x00\r\n\r\n",
            b"INVITE a SIP/2.0\nRefer-To: <sip:a@b?Replaces=%",
        ] {
            let _ = SipMessage::parse(raw);
        }
    }

    proptest::proptest! {
        /// The trace parser binds a message by its scan and builds it elsewhere: the
        /// scan must see the To tag the built message has.
        #[test]
        fn the_scan_sees_the_to_tag_the_message_has(value in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just("\"".to_owned()), proptest::strategy::Just("\\".to_owned()),
                proptest::strategy::Just("<".to_owned()), proptest::strategy::Just(">".to_owned()),
                proptest::strategy::Just(";tag=".to_owned()), proptest::strategy::Just(";".to_owned()),
                proptest::strategy::Just("sip:1@h".to_owned()), "[ -~]{0,4}",
            ], 0..8)) {
            let value = value.concat();
            let raw = format!("INVITE sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@b>\r\nTo: {value}\r\n\r\n");
            let scanned = Scanned::scan(raw.as_bytes(), None).unwrap();
            let tagged = scanned.to_tagged();
            let built = scanned.build();
            proptest::prop_assert_eq!(tagged, built.to.tag.is_some());
            proptest::prop_assert_eq!(tagged, built.to_tagged);
        }
    }
}
