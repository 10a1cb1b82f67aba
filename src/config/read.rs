//! A configuration or rule file read so that every mistake in it is found in one run.
//!
//! The file is parsed whole first. When that fails, it is parsed again piece by piece
//! (see `yaml::pieces`): each item of `rules:` (and of `sources:` in the main file)
//! alone, then the rest, so a bad key in one rule does not hide a typo in the next, and
//! the rules that do parse are still built and checked. Each YAML error becomes a
//! [`Problem`] at its line and column in this file.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_saphyr::Spanned;

use super::ConfigFile;
use crate::problem::Problem;
use crate::rules::config::{RuleConfig, RulesFile, suggest};
use crate::source::config::SourceConfig;
use crate::yaml::pieces::{self, parse_items, parse_rest};
use crate::yaml::tree::Node;

/// What could be read of one file.
pub(super) struct Read<F> {
    /// The file's top level when it parsed, the sections with mistakes left out (its
    /// `rules` are in [`Read::rules`]).
    pub file: Option<F>,
    /// Every rule that parsed.
    pub rules: Vec<Spanned<RuleConfig>>,
    /// `sources:` or some item of it did not parse (so "no source" is no news).
    pub sources_failed: bool,
    /// Where each source read one by one stands in the file's `sources:` (empty when
    /// they were read with the file): `sources[i]` of a problem is the `i`th of these.
    pub source_indexes: Vec<usize>,
    /// The file as a tree of positions, when it is YAML.
    pub tree: Option<Node>,
    pub problems: Vec<Problem>,
}

/// A file kind with `rules:` at its top level.
pub(super) trait TopLevel: DeserializeOwned {
    /// Whether its `sources:` items are read one by one too.
    const SOURCES: bool;
    fn take_rules(&mut self) -> Vec<Spanned<RuleConfig>>;
    fn set_sources(&mut self, sources: Vec<SourceConfig>);
}

impl TopLevel for ConfigFile {
    const SOURCES: bool = true;
    fn take_rules(&mut self) -> Vec<Spanned<RuleConfig>> {
        std::mem::take(&mut self.rules)
    }
    fn set_sources(&mut self, sources: Vec<SourceConfig>) {
        self.sources = sources;
    }
}

impl TopLevel for RulesFile {
    const SOURCES: bool = false;
    fn take_rules(&mut self) -> Vec<Spanned<RuleConfig>> {
        std::mem::take(&mut self.rules)
    }
    fn set_sources(&mut self, _: Vec<SourceConfig>) {}
}

/// Reads `text`, the content of `path` (named in problems).
pub(super) fn read<F: TopLevel>(text: &str, path: &Path) -> Read<F> {
    let mut read = Read {
        file: None,
        rules: Vec::new(),
        sources_failed: false,
        source_indexes: Vec::new(),
        tree: Node::parse(text),
        problems: Vec::new(),
    };
    let whole = match serde_saphyr::from_str::<F>(text) {
        Ok(mut file) => {
            read.rules = file.take_rules();
            read.file = Some(file);
            return read;
        }
        Err(error) => error,
    };
    let sections = pieces::sections(text);
    if sections.is_empty() {
        read.problems.push(yaml_problem(path, &whole));
        return read;
    }
    let mut errors = read_pieces(text, &sections, &mut read);
    if errors.is_empty() {
        // Each piece parses alone: the mistake lies between them (an alias to an
        // anchor in another rule, say); the whole file's error tells it.
        errors.push((None, whole));
        read.file = None;
    }
    if read.tree.is_none() {
        // Not YAML as a whole: the tree of the rest still places the other problems.
        let lines: Vec<usize> = errors.iter().filter_map(|(_, e)| line_of(e)).collect();
        read.tree = Node::parse(&pieces::without(text, &sections, &lines));
    }
    for (item, error) in &errors {
        let mut problem = yaml_problem(path, error);
        if let Some(name) = item.as_ref().and_then(|item| rule_name(text, read.tree.as_ref(), item)) {
            problem.message = format!("rule `{name}`: {}", problem.message);
        }
        if !read.problems.contains(&problem) {
            read.problems.push(problem);
        }
    }
    read
}

/// An error, with the lines of the rule it is in (when it is in one).
type PieceError = (Option<Range<usize>>, serde_saphyr::Error);

/// Parses the file piece by piece into `read`: each rule, each source (of a main
/// file), then the rest; returns the errors.
fn read_pieces<F: TopLevel>(text: &str, sections: &[pieces::Section], read: &mut Read<F>) -> Vec<PieceError> {
    let split = |key: &str| sections.iter().find(|s| s.key == key && !s.items.is_empty());
    let mut errors = Vec::new();
    let mut skip = Vec::new();
    if let Some(section) = split("rules") {
        let (rules, failed) = parse_items::<Spanned<RuleConfig>>(text, section);
        read.rules = rules.into_iter().map(|(_, rule)| rule).collect();
        errors.extend(failed.into_iter().map(|(i, e)| (section.items.get(i).cloned(), e)));
        skip.push("rules");
    }
    let mut sources = None;
    if let Some(section) = split("sources").filter(|_| F::SOURCES) {
        let (parsed, failed) = parse_items::<SourceConfig>(text, section);
        read.sources_failed = !failed.is_empty();
        read.source_indexes = parsed.iter().map(|(index, _)| *index).collect();
        sources = Some(parsed.into_iter().map(|(_, source)| source).collect());
        errors.extend(failed.into_iter().map(|(_, error)| (None, error)));
        skip.push("sources");
    }
    let rest = parse_rest::<F>(text, sections, &skip);
    errors.extend(rest.errors.into_iter().map(|error| (None, error)));
    read.sources_failed |= rest.left_out.iter().any(|key| key == "sources");
    read.file = rest.value.map(|mut file| {
        if let Some(sources) = sources {
            file.set_sources(sources);
        }
        file
    });
    errors
}

/// The 0-based line of an error.
fn line_of(error: &serde_saphyr::Error) -> Option<usize> {
    let line = error.location()?.line();
    usize::try_from(line).ok()?.checked_sub(1)
}

/// The name of the rule written on lines `item`: from the tree when it holds that
/// rule, else from a `name:` line of its own (a rule that is not YAML).
fn rule_name(text: &str, tree: Option<&Node>, item: &Range<usize>) -> Option<String> {
    let in_item = |node: &Node| {
        usize::try_from(node.line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .is_some_and(|l| item.contains(&l))
    };
    let from_tree = tree
        .and_then(|t| t.get("rules"))
        .and_then(|rules| rules.items().iter().find(|n| in_item(n)))
        .and_then(|rule| rule.get("name")?.text().map(str::to_owned));
    from_tree.or_else(|| {
        text.lines().skip(item.start).take(item.len()).find_map(|line| {
            let line = line.trim_start();
            let value = line
                .strip_prefix("- ")
                .unwrap_or(line)
                .trim_start()
                .strip_prefix("name:")?;
            let value = value.split(" #").next().unwrap_or(value).trim();
            Some(value.trim_matches(['"', '\'']).to_owned()).filter(|v| !v.is_empty())
        })
    })
}

/// A YAML error as a problem at its place; the message without serde-saphyr's
/// " at line N, column M" (the place is said once), with "did you mean" when it helps.
pub(super) fn yaml_problem(path: &Path, error: &serde_saphyr::Error) -> Problem {
    let at = error.location().map(|l| (l.line(), l.column()));
    let mut message = error.without_snippet().to_string();
    if let Some((line, column)) = at {
        let suffix = format!(" at line {line}, column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    Problem::new(path, at, suggest(&message))
}
