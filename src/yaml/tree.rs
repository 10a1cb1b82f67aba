//! A YAML document as a tree of positions: where each key's value and each list item
//! starts, and the text of each scalar. Problems found after parsing name a path
//! (`webhook.url`, `run.argv[1]`, `sources[0].path`); [`Node::locate`] turns that path
//! into the line and column of the value, so the problem points at it.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A node: where it starts (line and column from 1) and what it holds.
#[derive(Debug)]
pub(crate) struct Node {
    pub line: u64,
    pub column: u64,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Scalar(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    /// Parses `text`; `None` when it is not YAML (then problems keep coarser places).
    pub fn parse(text: &str) -> Option<Node> {
        serde_saphyr::from_str(text).ok()
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The items of a list (none for other nodes).
    pub fn items(&self) -> &[Node] {
        match &self.kind {
            Kind::List(items) => items,
            _ => &[],
        }
    }

    /// A scalar's text.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(text) => Some(text),
            _ => None,
        }
    }

    /// The node at `path`: keys joined by `.`, list indexes in brackets
    /// (`run.argv[1]`); `None` when some step is not there.
    pub fn find(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for part in path.split('.') {
            let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
            if !key.is_empty() {
                node = node.get(key)?;
            }
            for index in indexes.split('[').filter(|i| !i.is_empty()) {
                let index: usize = index.trim_end_matches(']').parse().ok()?;
                node = node.items().get(index)?;
            }
        }
        Some(node)
    }

    /// The node a problem message is about: its leading path (the text before the
    /// first `: `, as in `webhook.url: scheme "ftp" is not http or https`), or the
    /// longest part of it that exists; `None` when the message starts with no path.
    pub fn locate(&self, message: &str) -> Option<&Node> {
        let (path, _) = message.split_once(": ")?;
        let path_like = |c: char| c.is_ascii_alphanumeric() || "_-.[]".contains(c);
        if path.is_empty() || !path.chars().all(path_like) {
            return None;
        }
        let mut path = path;
        loop {
            if let Some(node) = self.find(path) {
                return Some(node);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        let spanned = Spanned::<Kind>::deserialize(deserializer)?;
        Ok(Node {
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            kind: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Kind, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

/// Any YAML value: scalars keep their text, lists and maps their nodes.
struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Scalar(v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Scalar(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Scalar(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Scalar(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Scalar(v.to_owned()))
    }

    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Scalar(String::new()))
    }

    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Scalar(String::new()))
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Kind, D::Error> {
        Kind::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key.text().unwrap_or_default().to_owned(), value));
        }
        Ok(Kind::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "version: 1\nrules:\n  - name: a\n    run: { argv: [\"/bin/echo\", \"{{ x }}\"] }\n  - name: b\n    webhook:\n      url: \"ftp://h/\"\n";

    #[test]
    fn paths_lead_to_the_values() {
        let tree = Node::parse(TEXT).unwrap();
        let at = |node: &Node| (node.line, node.column);
        assert_eq!(at(tree.find("rules[0].run.argv[1]").unwrap()), (4, 32));
        assert_eq!(at(tree.find("rules[1].webhook.url").unwrap()), (7, 12));
        assert_eq!(tree.find("rules[1].name").unwrap().text(), Some("b"));
        let rule = &tree.get("rules").unwrap().items()[1];
        assert_eq!(at(rule.locate("webhook.url: scheme \"ftp\"").unwrap()), (7, 12));
        // A block mapping starts at its first key.
        assert_eq!(at(rule.locate("webhook.nothing: x").unwrap()), (7, 7));
        assert!(rule.locate("give one of `webhook`: x").is_none());
    }
}
