//! Header and columns of a call-log file: a header record in, the layout of its rows
//! (which column holds which field, and the kind of rows) out.
//!
//! Columns are matched by name in any letter case and order, with aliases (the first
//! alias preferred when a header has several); a `columns:` mapping ([`ColumnMapping`])
//! overrides the names; unknown columns are ignored. A header with an event column makes
//! every row a state row, else every row is a record row. Also here: telling a header
//! from data, and sniffing the delimiter from the header line.

use serde::{Deserialize, Serialize};

use super::CallLogErrorKind;
use super::records::Fields;
use crate::event::clean_text;

/// The `columns:` mapping of a `call_log` source: which header name holds each field,
/// overriding the built-in aliases. Names match in any letter case; a field left out is
/// found by its aliases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    /// When the row's event happened (record rows: when the call started). Aliases
    /// `time`, `timestamp`, `date`, `datetime`.
    pub time: Option<String>,
    /// The event of a state row. Aliases `event`, `state`, `status`. A header with this
    /// column makes every row a state row.
    pub event: Option<String>,
    /// SIP Call-ID. Aliases `call_id`, `callid`.
    pub call_id: Option<String>,
    /// Direction, or MicroSIP's call type (`0|1|2`, `outgoing|incoming|missed`).
    /// Aliases `direction`, `type`, `dir`.
    pub direction: Option<String>,
    /// Remote number. Aliases `number`, `phone`, `caller`, `remote_number`.
    pub number: Option<String>,
    /// Remote display name. Aliases `name`, `display`, `display_name`, `remote_name`,
    /// `caller_name`.
    pub name: Option<String>,
    /// Final SIP status of the call. Aliases `status_code`, `code`, `sip_code`.
    pub status_code: Option<String>,
    /// Outcome in the contract's words. Aliases `outcome`, `result`.
    pub outcome: Option<String>,
    /// Talk time: seconds or `[HH:]MM:SS`. Alias `duration`.
    pub duration: Option<String>,
    /// Status text, possibly starting with a SIP status (`486 Busy Here`). Aliases
    /// `info`, `reason`.
    pub info: Option<String>,
    /// The watched phone's own number. Aliases `local_number`, `local`, `account`.
    pub local_number: Option<String>,
}

/// Which kind of rows a file holds, decided by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// One event a row (the header has an event column).
    State,
    /// One finished call a row (MicroSIP's history export).
    Record,
}

/// A header as read: its delimiter and column names (kept in a checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderState {
    pub delimiter: u8,
    pub names: Vec<String>,
}

/// The fields a column can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Time,
    Event,
    CallId,
    Direction,
    Number,
    Name,
    StatusCode,
    Outcome,
    Duration,
    Info,
    LocalNumber,
}

const FIELD_COUNT: usize = 11;

/// Each field, its config name and its aliases (normalized: lowercase, `_` for spaces
/// and dashes), the first alias preferred when a header has several.
const FIELDS: [(Field, &str, &[&str]); FIELD_COUNT] = [
    (Field::Time, "time", &["time", "timestamp", "date", "datetime"]),
    (Field::Event, "event", &["event", "state", "status"]),
    (Field::CallId, "call_id", &["call_id", "callid"]),
    (Field::Direction, "direction", &["direction", "type", "dir"]),
    (Field::Number, "number", &["number", "phone", "caller", "remote_number"]),
    (
        Field::Name,
        "name",
        &["name", "display", "display_name", "remote_name", "caller_name"],
    ),
    (Field::StatusCode, "status_code", &["status_code", "code", "sip_code"]),
    (Field::Outcome, "outcome", &["outcome", "result"]),
    (Field::Duration, "duration", &["duration"]),
    (Field::Info, "info", &["info", "reason"]),
    (
        Field::LocalNumber,
        "local_number",
        &["local_number", "local", "account"],
    ),
];

impl Field {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        FIELDS[self.index()].1
    }

    fn aliases(self) -> &'static [&'static str] {
        FIELDS[self.index()].2
    }
}

impl ColumnMapping {
    fn get(&self, field: Field) -> Option<&str> {
        match field {
            Field::Time => self.time.as_deref(),
            Field::Event => self.event.as_deref(),
            Field::CallId => self.call_id.as_deref(),
            Field::Direction => self.direction.as_deref(),
            Field::Number => self.number.as_deref(),
            Field::Name => self.name.as_deref(),
            Field::StatusCode => self.status_code.as_deref(),
            Field::Outcome => self.outcome.as_deref(),
            Field::Duration => self.duration.as_deref(),
            Field::Info => self.info.as_deref(),
            Field::LocalNumber => self.local_number.as_deref(),
        }
    }
}

/// Header names compare lowercase, trimmed, with spaces and dashes as `_`.
pub(crate) fn normalize_name(name: &str) -> String {
    name.trim()
        .trim_start_matches('\u{feff}')
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Which column holds each field, for one header.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    columns: [Option<usize>; FIELD_COUNT],
    pub(crate) kind: RowKind,
}

impl Layout {
    /// Resolves a header; the errors say why no row can be read with it.
    pub(crate) fn resolve(names: &[String], mapping: &ColumnMapping) -> Result<Layout, Vec<CallLogErrorKind>> {
        let normalized: Vec<String> = names.iter().map(|n| normalize_name(n)).collect();
        let mut columns = [None; FIELD_COUNT];
        let mut claimed = vec![false; names.len()];
        let mut problems = Vec::new();
        // Mapped names first, so an alias cannot take a column the mapping gave away.
        for (field, config_name, _) in FIELDS {
            if let Some(wanted) = mapping.get(field) {
                let wanted = normalize_name(wanted);
                match normalized.iter().position(|n| *n == wanted) {
                    Some(i) => {
                        columns[field.index()] = Some(i);
                        claimed[i] = true;
                    }
                    None => problems.push(CallLogErrorKind::MappedColumnMissing {
                        field: config_name,
                        name: wanted,
                    }),
                }
            }
        }
        for (field, _, aliases) in FIELDS {
            if mapping.get(field).is_some() {
                continue;
            }
            let found = aliases
                .iter()
                .find_map(|alias| (0..names.len()).find(|&i| !claimed[i] && normalized[i] == *alias));
            if let Some(i) = found {
                columns[field.index()] = Some(i);
                claimed[i] = true;
            }
        }
        let kind = if columns[Field::Event.index()].is_some() {
            RowKind::State
        } else {
            RowKind::Record
        };
        let mut required = vec![Field::Time, Field::Number];
        if kind == RowKind::Record {
            required.push(Field::Direction);
        }
        for field in required {
            if columns[field.index()].is_none() && mapping.get(field).is_none() {
                problems.push(CallLogErrorKind::MissingColumn {
                    field: field.name(),
                    looked: field.aliases().join(", "),
                });
            }
        }
        if problems.is_empty() {
            Ok(Layout { columns, kind })
        } else {
            Err(problems)
        }
    }
}

/// The header in force.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) names: Vec<String>,
    /// `None`: unusable (already reported); rows are dropped until a new header.
    pub(crate) layout: Option<Layout>,
}

/// Whether a row is a header: it names a time and a number column (data never does).
pub(crate) fn looks_like_header(fields: &Fields<'_>) -> bool {
    let names: Vec<String> = fields.iter().map(normalize_name).collect();
    let has = |field: Field| names.iter().any(|n| field.aliases().contains(&n.as_str()));
    has(Field::Time) && has(Field::Number)
}

/// One data row under a resolved header.
pub(crate) struct Row<'a, 'b> {
    pub(crate) layout: &'a Layout,
    pub(crate) names: &'a [String],
    pub(crate) fields: &'a Fields<'b>,
}

impl Row<'_, '_> {
    /// The field's value, trimmed; `None` when the column is absent, the row too short,
    /// or the value empty.
    pub(crate) fn get(&self, field: Field) -> Option<&str> {
        let column = self.layout.columns[field.index()]?;
        let value = self.fields.get(column)?.trim();
        (!value.is_empty()).then_some(value)
    }

    /// The field's value, or an error naming the column when it is empty.
    pub(crate) fn required(&self, field: Field) -> Result<&str, CallLogErrorKind> {
        self.get(field).ok_or_else(|| CallLogErrorKind::BadValue {
            column: self.column_name(field),
            reason: "is empty".to_owned(),
        })
    }

    /// The error for a field whose value cannot be read, saying why.
    pub(crate) fn bad(&self, field: Field, reason: &str) -> CallLogErrorKind {
        let value = self.get(field).unwrap_or_default();
        // The value is shown in the message: cleaned and short, it is caller data.
        let shown = clean_text(value, 40);
        CallLogErrorKind::BadValue {
            column: self.column_name(field),
            reason: format!("{shown:?} {reason}"),
        }
    }

    /// The column as the header names it, and the field when that differs.
    fn column_name(&self, field: Field) -> String {
        let header = self.layout.columns[field.index()]
            .and_then(|i| self.names.get(i))
            .map(|n| clean_text(n, 40))
            .unwrap_or_default();
        if normalize_name(&header) == field.name() {
            header
        } else {
            format!("{header:?} ({})", field.name())
        }
    }
}

/// The delimiter of a header line: the most frequent of `,` `;` tab outside quotes
/// (`,` when none occurs).
pub(crate) fn sniff_delimiter(line: &[u8]) -> u8 {
    let line = match memchr::memchr(b'\n', line) {
        Some(nl) => &line[..nl],
        None => line,
    };
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let mut best = 0;
    for i in 1..3 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    candidates[best]
}

/// The first non-blank line of `text` once it is complete (its line ending arrived).
pub(crate) fn header_line(text: &[u8]) -> Option<&[u8]> {
    let mut rest = text;
    loop {
        let nl = memchr::memchr(b'\n', rest)?;
        let line = &rest[..nl];
        if line.iter().any(|b| !b.is_ascii_whitespace()) {
            return Some(line);
        }
        rest = &rest[nl + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn columns_are_found_by_alias_and_mapping() {
        let header = names(&["Phone", "Call-ID", " TIMESTAMP", "Status", "Date"]);
        let layout = Layout::resolve(&header, &ColumnMapping::default()).unwrap();
        assert_eq!(layout.kind, RowKind::State, "status is an event alias");
        assert_eq!(layout.columns[Field::Number.index()], Some(0));
        assert_eq!(layout.columns[Field::CallId.index()], Some(1));
        assert_eq!(layout.columns[Field::Time.index()], Some(2), "the first alias wins");
        // A mapped column is not taken by an alias.
        let mapping = ColumnMapping {
            status_code: Some("status".into()),
            ..ColumnMapping::default()
        };
        let layout = Layout::resolve(&header, &mapping).unwrap_err();
        assert_eq!(
            layout,
            [CallLogErrorKind::MissingColumn {
                field: "direction",
                looked: "direction, type, dir".into()
            }],
            "without an event column the rows are records, which need a direction"
        );
    }

    #[test]
    fn delimiters_headers_and_names() {
        assert_eq!(sniff_delimiter(b"a;b;c,d"), b';');
        assert_eq!(sniff_delimiter(b"\"a,b,c\"\tx\ty"), b'\t');
        assert_eq!(sniff_delimiter(b"single"), b',');
        assert_eq!(header_line(b"\r\n  \nTime,Number\nrest"), Some(&b"Time,Number"[..]));
        assert_eq!(header_line(b"Time,Num"), None, "not complete yet");
        assert_eq!(normalize_name("\u{feff}Display-Name "), "display_name");
    }
}
