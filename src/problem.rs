//! A mistake in a configuration file: which file, where in it (line and column) and
//! what is wrong, with the lines around it.
//!
//! Loading a configuration collects every problem it finds rather than stopping at the
//! first, so that `callhook check` (and the daemon's reload) can show them all in one
//! run: one block per problem, then a count ([`summary`]).

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in, as the configuration named it.
    pub path: PathBuf,
    /// Line and column, both from 1 (columns count characters); `None` when the problem
    /// has no single place (a file that cannot be read, a missing source).
    pub at: Option<(u64, u64)>,
    /// What is wrong, lowercase, with the fix when known.
    pub message: String,
    /// The file's lines around `at` with a caret under the column; empty when unknown.
    pub snippet: String,
}

impl Problem {
    pub fn new(path: impl Into<PathBuf>, at: Option<(u64, u64)>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            // Line 0 is how a parser says "somewhere"; no place is more honest.
            at: at.filter(|(line, column)| *line > 0 && *column > 0),
            message: message.into(),
            snippet: String::new(),
        }
    }

    /// Adds the snippet: the line before the problem's, its own, and a caret under its
    /// column, cut from `text` (the file's content).
    pub fn with_snippet(mut self, text: &str) -> Problem {
        let Some((line, column)) = self.at else {
            return self;
        };
        let lines: Vec<&str> = text.lines().collect();
        let index = usize::try_from(line - 1).unwrap_or(usize::MAX);
        let Some(own) = lines.get(index) else {
            return self;
        };
        let width = line.to_string().len();
        let gutter = " ".repeat(width);
        let mut snippet = format!("{gutter} |\n");
        if let Some(before) = index.checked_sub(1).and_then(|i| lines.get(i)) {
            snippet.push_str(&format!("{:>width$} | {}\n", line - 1, shown(before)));
        }
        snippet.push_str(&format!("{line:>width$} | {}\n", shown(own)));
        let pad = " ".repeat(usize::try_from(column - 1).unwrap_or(0).min(own.chars().count()));
        snippet.push_str(&format!("{gutter} | {pad}^"));
        self.snippet = snippet;
        self
    }

    /// The block `callhook check` prints: `error: MESSAGE`, then ` --> FILE:LINE:COL`
    /// and the snippet.
    pub fn block(&self) -> String {
        let mut block = format!("error: {}\n  --> {}", self.message, self.place());
        if !self.snippet.is_empty() {
            block.push('\n');
            block.push_str(&self.snippet);
        }
        block
    }

    /// `FILE:LINE:COL`, or `FILE` when there is no place.
    fn place(&self) -> String {
        match self.at {
            Some((line, column)) => format!("{}:{line}:{column}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

/// One line: `FILE:LINE:COL: MESSAGE` (what logs show).
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place(), self.message)
    }
}

/// A source line as shown: tabs as one space each, so the caret lines up.
fn shown(line: &str) -> String {
    line.replace('\t', " ")
}

/// The count line after the blocks: `3 problems in rules/x.yaml`, or with several
/// files `5 problems: 3 in callhook.yaml, 2 in rules/x.yaml`.
pub fn summary(problems: &[Problem]) -> String {
    let mut files: Vec<(&Path, usize)> = Vec::new();
    for problem in problems {
        match files.iter_mut().find(|(path, _)| *path == problem.path.as_path()) {
            Some((_, count)) => *count += 1,
            None => files.push((&problem.path, 1)),
        }
    }
    let count = |n: usize| format!("{n} problem{}", if n == 1 { "" } else { "s" });
    match files.as_slice() {
        [] => "no problems".to_owned(),
        [(path, n)] => format!("{} in {}", count(*n), path.display()),
        many => format!(
            "{}: {}",
            count(problems.len()),
            many.iter()
                .map(|(path, n)| format!("{n} in {}", path.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_names_the_file_and_points_at_the_column() {
        let text = "version: 1\nrules:\n  - name: a\n    bogus: 1\n";
        let problem = Problem::new("rules/x.yaml", Some((4, 5)), "unknown field `bogus`").with_snippet(text);
        assert_eq!(
            problem.block(),
            "error: unknown field `bogus`\n  --> rules/x.yaml:4:5\n  |\n3 |   - name: a\n4 |     bogus: 1\n  |     ^"
        );
        assert_eq!(problem.to_string(), "rules/x.yaml:4:5: unknown field `bogus`");
    }

    #[test]
    fn the_summary_counts_per_file() {
        let p = |path: &str| Problem::new(path, None, "x");
        assert_eq!(summary(&[p("a.yaml")]), "1 problem in a.yaml");
        assert_eq!(
            summary(&[p("a.yaml"), p("b.yaml"), p("a.yaml")]),
            "3 problems: 2 in a.yaml, 1 in b.yaml"
        );
    }
}
