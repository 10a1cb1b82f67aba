//! A YAML file parsed piece by piece, so that each piece's first mistake is found.
//!
//! serde-saphyr stops at the first error, syntax or type. A configuration is a mapping
//! whose keys start at column 0, and its `rules:` (or `sources:`) a block list whose
//! items start with `- ` at one indentation; [`sections`] finds those by line. A piece is
//! parsed as the whole file with every other line made empty, so lines and columns (and
//! serde-saphyr's messages) stay those of the file. Flow-style lists (`[...]`) and other
//! shapes are not cut: they stay one piece.

use std::ops::Range;

use serde::de::DeserializeOwned;

/// A top-level key and its lines (0-based, the key's own line first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub key: String,
    pub lines: Range<usize>,
    /// When the value is a block list: each item's lines.
    pub items: Vec<Range<usize>>,
}

/// The top-level sections of `text`; empty when it is not a block mapping at column 0.
pub(crate) fn sections(text: &str) -> Vec<Section> {
    let lines: Vec<&str> = text.lines().collect();
    let mut sections: Vec<Section> = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let first = line.chars().next();
        let content = first.is_some_and(|c| !c.is_whitespace() && c != '#');
        if !content {
            continue;
        }
        let marker = *line == "---" || line.starts_with("--- ") || *line == "...";
        // A list may be written with its `- ` at column 0 too: still its key's section.
        if !marker && (*line == "-" || line.starts_with("- ")) && !sections.is_empty() {
            continue;
        }
        if let Some(last) = sections.last_mut() {
            last.lines.end = index;
        }
        if marker {
            continue;
        }
        let Some((key, _)) = line.split_once(':').filter(|_| !line.starts_with(['{', '[', '-'])) else {
            return Vec::new(); // not a block mapping: leave the file whole
        };
        sections.push(Section {
            key: key.trim().trim_matches(['"', '\'']).to_owned(),
            lines: index..lines.len(),
            items: Vec::new(),
        });
    }
    for section in &mut sections {
        section.items = items(&lines, section.lines.clone());
    }
    sections
}

/// The items of a block list under a section's key line, each from its `-` line to the
/// next; none when the value is not a block list.
fn items(lines: &[&str], section: Range<usize>) -> Vec<Range<usize>> {
    let header = lines[section.start];
    let after_colon = header.split_once(':').map_or("", |(_, v)| v).trim();
    if !(after_colon.is_empty() || after_colon.starts_with('#')) {
        return Vec::new();
    }
    let body = section.start + 1..section.end;
    let significant = |i: &usize| {
        let trimmed = lines[*i].trim_start();
        !trimmed.is_empty() && !trimmed.starts_with('#')
    };
    let Some(first) = body.clone().find(significant) else {
        return Vec::new();
    };
    let indent = lines[first].len() - lines[first].trim_start().len();
    let is_item = |i: usize| {
        let (Some(before), Some(rest)) = (lines[i].get(..indent), lines[i].get(indent..)) else {
            return false;
        };
        before.trim().is_empty() && (rest == "-" || rest.starts_with("- "))
    };
    if !is_item(first) {
        return Vec::new();
    }
    let starts: Vec<usize> = body.clone().filter(|i| is_item(*i)).collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, start)| *start..starts.get(n + 1).copied().unwrap_or(body.end))
        .collect()
}

/// `text` with every line outside `keep` made empty: positions stay those of the file.
pub(crate) fn keep(text: &str, keep: &[Range<usize>]) -> String {
    keep_lines(text, |i| keep.iter().any(|r| r.contains(&i)))
}

/// `text` without the pieces that `lines` fall in: the list item holding a line, else
/// its section (to read the tree of what is still YAML).
pub(crate) fn without(text: &str, sections: &[Section], lines: &[usize]) -> String {
    let mut left_out: Vec<Range<usize>> = Vec::new();
    for line in lines {
        let Some(section) = sections.iter().find(|s| s.lines.contains(line)) else {
            continue;
        };
        let item = section.items.iter().find(|i| i.contains(line));
        left_out.push(item.unwrap_or(&section.lines).clone());
    }
    keep_lines(text, |i| !left_out.iter().any(|r| r.contains(&i)))
}

/// `text` with the lines `kept` says no to made empty.
fn keep_lines(text: &str, kept: impl Fn(usize) -> bool) -> String {
    text.lines()
        .enumerate()
        .map(|(i, line)| if kept(i) { line } else { "" })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An item's mistake, with the item's index.
pub(crate) type ItemError = (usize, serde_saphyr::Error);

/// Most mistakes looked for in one item (each try parses it again).
const MOST_PER_ITEM: usize = 20;

/// Each item of `section` parsed alone as a one-item list of `T`: the items that parse
/// and the errors of those that do not, each with the item's index. After an error the line
/// it is on (with the lines under it) is left out and the item parsed again, so a bad
/// key does not hide the next one, and an item whose mistakes can all be left out is
/// still returned, to have its values checked.
pub(crate) fn parse_items<T: DeserializeOwned>(text: &str, section: &Section) -> (Vec<(usize, T)>, Vec<ItemError>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (index, item) in section.items.iter().enumerate() {
        let mut left_out: Vec<usize> = Vec::new();
        for _ in 0..MOST_PER_ITEM {
            let doc = keep_lines(text, |i| item.contains(&i) && !left_out.contains(&i));
            let error = match serde_saphyr::from_str::<Vec<T>>(&doc) {
                Ok(items) => {
                    parsed.extend(items.into_iter().map(|item| (index, item)));
                    break;
                }
                Err(error) => error,
            };
            // A key left out may be one the item needs: that is no mistake of the file.
            if !left_out.is_empty() && error.to_string().contains("missing field") {
                break;
            }
            let line = error
                .location()
                .and_then(|l| usize::try_from(l.line()).ok())
                .and_then(|l| l.checked_sub(1));
            errors.push((index, error));
            match line.filter(|l| *l > item.start && item.contains(l)) {
                Some(line) => left_out.extend(block(&lines, line, item.end)),
                None => break,
            }
        }
    }
    (parsed, errors)
}

/// Line `start` and the lines under it (more indented, or empty), up to `end`.
fn block(lines: &[&str], start: usize, end: usize) -> Range<usize> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let own = indent(lines[start]);
    let mut stop = start + 1;
    while stop < end && (lines[stop].trim().is_empty() || indent(lines[stop]) > own) {
        stop += 1;
    }
    start..stop
}

/// The rest of a file parsed piece by piece (see [`parse_rest`]).
pub(crate) struct Rest<T> {
    /// The value of what parsed, without the sections left out.
    pub value: Option<T>,
    pub errors: Vec<serde_saphyr::Error>,
    /// The keys of the sections left out for their mistakes.
    pub left_out: Vec<String>,
}

/// The file without the sections named in `skip`, parsed as `T`. A section that fails
/// is left out and the rest parsed again, so each section's first mistake is found,
/// and the values of the others can still be checked.
pub(crate) fn parse_rest<T: DeserializeOwned>(text: &str, sections: &[Section], skip: &[&str]) -> Rest<T> {
    let mut left: Vec<&Section> = sections.iter().filter(|s| !skip.contains(&s.key.as_str())).collect();
    let mut rest = Rest {
        value: None,
        errors: Vec::new(),
        left_out: Vec::new(),
    };
    loop {
        let ranges: Vec<Range<usize>> = left.iter().map(|s| s.lines.clone()).collect();
        let error = match serde_saphyr::from_str::<T>(&keep(text, &ranges)) {
            Ok(value) => {
                rest.value = Some(value);
                return rest;
            }
            Err(error) => error,
        };
        // A key left out is missing now: not a mistake of the file.
        let message = error.to_string();
        if rest
            .left_out
            .iter()
            .any(|key| message.contains(&format!("missing field `{key}`")))
        {
            return rest;
        }
        let line = error.location().map(|l| l.line()).unwrap_or(0);
        let at = left.iter().position(|s| {
            s.lines
                .contains(&usize::try_from(line.saturating_sub(1)).unwrap_or(usize::MAX))
        });
        rest.errors.push(error);
        match at {
            Some(index) => rest.left_out.push(left.remove(index).key.clone()),
            None => return rest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# a config\nversion: 1\nrules:\n  # first\n  - name: a\n    on: ringing\n\n  - name: b\n    run:\n      argv: [x]\nstate_dir: s\nsources: [{ kind: hook }]\n";

    #[test]
    fn sections_and_items_by_line() {
        let found = sections(TEXT);
        let keys: Vec<&str> = found.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["version", "rules", "state_dir", "sources"]);
        assert_eq!(found[1].lines, 2..10);
        assert_eq!(found[1].items, [4..7, 7..10]);
        assert!(found[3].items.is_empty(), "a flow list stays whole");
        assert!(sections("{ version: 1 }").is_empty());
        let flush = sections("rules:\n- name: a\n  on: ended\n- name: é\nversion: 1\n");
        assert_eq!(flush[0].items, [1..3, 3..4]);
        assert_eq!(flush[1].key, "version");
    }

    #[test]
    fn kept_lines_keep_their_place() {
        let found = sections(TEXT);
        let kept = keep(TEXT, &found[1].items[1..]);
        assert_eq!(kept.lines().nth(7), Some("  - name: b"));
        assert_eq!(kept.lines().nth(4), Some(""));
    }
}
