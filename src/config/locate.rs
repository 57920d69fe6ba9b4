//! Key paths (`routes[1].shadow.sample`) and where they are in the file.
//!
//! Errors are found on the deserialized structs, which no longer know their
//! position; this module walks a key path back through the originally parsed
//! TOML document (which kept its spans) to give each error a line and column.

use std::fmt;
use std::ops::Range;

use toml_edit::{Item, Table, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root to a key: `routes[1].weight`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// This path followed by `key`.
    pub fn key(&self, key: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    /// This path followed by `[index]`.
    pub fn index(&self, index: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(index));
        p
    }

    /// The last segment, when it is a key.
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }
}

/// A key name is written bare when TOML allows it, quoted otherwise
/// (`upstreams."api.v2"`).
fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare(k) {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Which part of a `key = value` pair a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The key itself (an unknown key).
    Key,
    /// The value (a bad value); for a table, its header.
    Value,
}

/// A node of the parsed document, whatever container it sits in.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }

    /// Normalizes an `Item` to the table or value inside it.
    fn unwrap_item(self) -> Node<'a> {
        match self {
            Node::Item(Item::Table(t)) => Node::Table(t),
            Node::Item(Item::Value(v)) => Node::Value(v),
            other => other,
        }
    }

    /// The entry `key` of a table or inline table, with its key's span.
    fn get_key(self, key: &str) -> Option<(Option<Range<usize>>, Node<'a>)> {
        let (k, item) = match self.unwrap_item() {
            Node::Table(t) => t.get_key_value(key)?,
            Node::Value(Value::InlineTable(t)) => t.get_key_value(key)?,
            _ => return None,
        };
        Some((k.span(), Node::Item(item)))
    }

    /// Element `index` of an array or array of tables.
    fn get_index(self, index: usize) -> Option<Node<'a>> {
        match self.unwrap_item() {
            Node::Item(Item::ArrayOfTables(a)) => a.get(index).map(Node::Table),
            Node::Value(Value::Array(a)) => a.get(index).map(Node::Value),
            _ => None,
        }
    }
}

/// The byte offset `path` points at in `root`, or the nearest enclosing
/// position when the path goes further than the file (a missing key points
/// at its table). `None` when nothing along the path is in the file.
pub(super) fn locate(root: &Item, path: &KeyPath, target: Target) -> Option<usize> {
    let mut node = Node::Item(root);
    let mut best: Option<usize> = None;
    let last = path.0.len().saturating_sub(1);
    for (i, seg) in path.0.iter().enumerate() {
        let (key_span, next) = match seg {
            Seg::Key(k) => match node.get_key(k) {
                Some(found) => found,
                None => break,
            },
            Seg::Index(n) => match node.get_index(*n) {
                Some(next) => (None, next),
                None => break,
            },
        };
        let value_span = next.span();
        let chosen = if i == last && target == Target::Key {
            key_span.or(value_span)
        } else {
            value_span.or(key_span)
        };
        if let Some(span) = chosen {
            best = Some(span.start);
        }
        node = next;
    }
    best
}

/// 1-based line and column (in characters) of a byte offset in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segs: &[Seg]) -> KeyPath {
        KeyPath(segs.to_vec())
    }

    fn k(s: &str) -> Seg {
        Seg::Key(s.into())
    }

    #[test]
    fn displays_paths() {
        let p = KeyPath::default()
            .key("routes")
            .index(1)
            .key("shadow")
            .key("sample");
        assert_eq!(p.to_string(), "routes[1].shadow.sample");
        assert_eq!(
            KeyPath::default().key("upstreams").key("a.b").to_string(),
            "upstreams.\"a.b\""
        );
    }

    #[test]
    fn finds_keys_and_values() {
        let text = "[server]\nlisten = \"x\"\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nweight = 150\nshadow = { sample = 2, methods = [\"GET\", 3] }\n";
        let doc = toml_edit::ImDocument::parse(text).expect("test document parses");
        let at = |p: &KeyPath, t| locate(doc.as_item(), p, t).map(|o| line_col(text, o));
        let weight = path(&[k("routes"), Seg::Index(1), k("weight")]);
        assert_eq!(at(&weight, Target::Value), Some((9, 10)));
        assert_eq!(at(&weight, Target::Key), Some((9, 1)));
        let sample = path(&[k("routes"), Seg::Index(1), k("shadow"), k("sample")]);
        assert_eq!(at(&sample, Target::Value), Some((10, 21)));
        let method = path(&[
            k("routes"),
            Seg::Index(1),
            k("shadow"),
            k("methods"),
            Seg::Index(1),
        ]);
        assert_eq!(at(&method, Target::Value), Some((10, 42)));
        // A missing key points at its table's header.
        let missing = path(&[k("routes"), Seg::Index(0), k("legacy")]);
        assert_eq!(at(&missing, Target::Value), Some((4, 1)));
        assert_eq!(at(&path(&[k("nothing"), k("here")]), Target::Value), None);
    }

    #[test]
    fn counts_columns_in_characters() {
        assert_eq!(line_col("a\né = 1", 5), (2, 3));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
