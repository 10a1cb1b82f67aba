//! Reading YAML so that one mistake does not hide the next.
//!
//! serde stops at the first error of a document. [`pieces`] cuts a configuration file
//! into its top-level sections and list items by line and parses each alone, positions
//! kept, so every rule's first mistake is found in one run; [`tree`] is the file as a
//! tree of positions, to point a problem found after parsing (a bad URL, a template
//! typo) at the value it is about.

pub(crate) mod pieces;
pub(crate) mod tree;
