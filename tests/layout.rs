//! The architecture, checked: each stage names only what lies upstream of it (STYLE.md,
//! "Layout sketch"), nothing in `parse/` builds a contract event, and no function or
//! file grows past what a reader takes in at once (100 lines a function, 800 lines of
//! non-test code a file).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir` (or the file `dir.rs` beside it).
fn files(stage: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let single = src.join(format!("{stage}.rs"));
    if single.is_file() {
        found.push(single);
    }
    let mut dirs = vec![src.join(stage)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                found.push(path);
            }
        }
    }
    assert!(!found.is_empty(), "no files for stage {stage}");
    found
}

/// A file's code before its `#[cfg(test)]` module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The stages `stage`'s code names (`crate::NAME`).
fn named(stage: &str) -> Vec<(PathBuf, String)> {
    let mut names = Vec::new();
    for path in files(stage) {
        let code = code(&path);
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.push((path.clone(), name));
        }
    }
    names
}

fn assert_names_none_of(stage: &str, forbidden: &[&str]) {
    for (path, name) in named(stage) {
        assert!(
            !forbidden.contains(&name.as_str()),
            "{} (stage `{stage}`) names `crate::{name}`, which lies downstream or beside it",
            path.display()
        );
    }
}

#[test]
fn stages_name_only_what_lies_upstream() {
    let all = [
        "source",
        "parse",
        "track",
        "correlate",
        "rules",
        "store",
        "dispatch",
        "pipeline",
        "daemon",
        "replay",
        "dry_run",
        "demo",
        "forward",
        "config",
    ];
    let except = |allowed: &[&str]| -> Vec<&str> { all.iter().copied().filter(|s| !allowed.contains(s)).collect() };
    assert_names_none_of("parse", &except(&["parse"]));
    assert_names_none_of("track", &except(&["track", "parse"]));
    assert_names_none_of(
        "source",
        &[
            "correlate",
            "rules",
            "store",
            "dispatch",
            "pipeline",
            "daemon",
            "config",
        ],
    );
    assert_names_none_of("correlate", &except(&["correlate"]));
    assert_names_none_of("rules", &except(&["rules"]));
    assert_names_none_of("store", &except(&["store"]));
    // Every stage counts into `metrics`, so it names none of them.
    assert_names_none_of("metrics", &all);
}

#[test]
fn nothing_in_parse_builds_a_contract_event() {
    for path in files("parse") {
        let code = code(&path);
        for builder in ["Event {", "CallFacts", "event_id(", "Ending::"] {
            // The word itself, not the end of a longer name (`HookEvent {`).
            let built = code.match_indices(builder).any(|(at, _)| {
                !code[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            assert!(
                !built,
                "{} builds events (`{builder}`): that is the trackers' job",
                path.display()
            );
        }
    }
}

#[test]
fn functions_and_files_stay_readable() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = vec![src.join("main.rs"), src.join("lib.rs"), src.join("cli.rs")];
    for stage in [
        "source",
        "parse",
        "track",
        "correlate",
        "rules",
        "store",
        "dispatch",
        "pipeline",
        "daemon",
        "replay",
        "dry_run",
        "demo",
        "forward",
        "config",
        "event",
        "duration",
        "discover",
        "expand",
        "broker",
        "metrics",
        "status",
        "bounded",
    ] {
        all.extend(files(stage));
    }
    let mut problems = Vec::new();
    for path in all {
        let code = code(&path);
        let lines: Vec<&str> = code.lines().collect();
        let counted = lines
            .iter()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
            .count();
        if counted > 800 {
            problems.push(format!("{}: {counted} lines of code (at most 800)", path.display()));
        }
        for (start, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "async fn ",
                "pub async fn ",
                "pub(super) fn ",
            ]
            .iter()
            .any(|p| trimmed.starts_with(p));
            if !is_fn || line.trim_end().ends_with(';') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let close = format!("{}}}", " ".repeat(indent));
            let end = lines[start..]
                .iter()
                .position(|l| l.trim_end() == close)
                .map_or(lines.len(), |n| start + n);
            let length = end - start + 1;
            if length > 100 {
                problems.push(format!(
                    "{}:{}: a function of {length} lines (at most 100): {}",
                    path.display(),
                    start + 1,
                    trimmed
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
