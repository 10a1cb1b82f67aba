//! A configuration or rule file read so that every mistake in it is found in one run.
//!
//! The file is parsed whole first. When that fails, it is parsed again piece by piece
//! (see `yaml::pieces`): each item of `rules:` (and of `sources:` in the main file)
//! alone, then the rest, so a bad key in one rule does not hide a typo in the next, and
//! the rules that do parse are still built and checked. Each YAML error becomes a
//! [`Problem`] at its line and column in this file.

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
    /// The file's top level when it parsed (its `rules` are in [`Read::rules`]).
    pub file: Option<F>,
    /// Every rule that parsed.
    pub rules: Vec<Spanned<RuleConfig>>,
    /// Some item of `sources:` did not parse (so "no source" is no news).
    pub sources_failed: bool,
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
    let tree = Node::parse(text);
    let mut read = Read {
        file: None,
        rules: Vec::new(),
        sources_failed: false,
        tree,
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
    let split = |key: &str| sections.iter().find(|s| s.key == key && !s.items.is_empty());
    let mut errors = Vec::new();
    let mut skip = Vec::new();
    if let Some(section) = split("rules") {
        let (rules, failed) = parse_items::<Spanned<RuleConfig>>(text, section);
        read.rules = rules;
        for (index, error) in failed {
            errors.push((rule_name(read.tree.as_ref(), section, index), error));
        }
        skip.push("rules");
    }
    let mut sources = None;
    if let Some(section) = split("sources").filter(|_| F::SOURCES) {
        let (parsed, failed) = parse_items::<SourceConfig>(text, section);
        read.sources_failed = !failed.is_empty();
        sources = Some(parsed);
        errors.extend(failed.into_iter().map(|(_, error)| (None, error)));
        skip.push("sources");
    }
    let (file, failed) = parse_rest::<F>(text, &sections, &skip);
    errors.extend(failed.into_iter().map(|error| (None, error)));
    read.file = file.map(|mut file| {
        if let Some(sources) = sources {
            file.set_sources(sources);
        }
        file
    });
    if errors.is_empty() {
        // Each piece parses alone: the mistake lies between them (an alias to an
        // anchor in another rule, say); the whole file's error tells it.
        errors.push((None, whole));
        read.file = None;
    }
    for (rule, error) in &errors {
        let mut problem = yaml_problem(path, error);
        if let Some(name) = rule {
            problem.message = format!("rule `{name}`: {}", problem.message);
        }
        if !read.problems.contains(&problem) {
            read.problems.push(problem);
        }
    }
    read
}

/// The name of rule `index` of `section`, when the file is YAML and the tree's items
/// are the pieces' (else `None`: the problem is placed, not named).
fn rule_name(tree: Option<&Node>, section: &pieces::Section, index: usize) -> Option<String> {
    let items = tree?.get("rules")?.items();
    if items.len() != section.items.len() {
        return None;
    }
    Some(items.get(index)?.get("name")?.text()?.to_owned())
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
