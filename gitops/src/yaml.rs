//! YAML read into a tree that remembers where every node came from, so an
//! error found later (by serde or by `domain::validate_spec`) can name the
//! line and column of the offending key.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Position {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Position {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// The text of a scalar; `plain` when unquoted (so `15`, `true`, `~`
    /// may be read as a number, a boolean or null).
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    /// Entries in document order: (key, value).
    Mapping(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub pos: Position,
}

impl Node {
    /// An empty plain scalar, `~` or `null`: what an empty document holds.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true } if is_null(text))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value of `key` in a mapping, with the key node.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            NodeKind::Mapping(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// What kind of node this is, for messages ("a mapping", "a string").
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "null",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Sequence(_) => "a sequence",
            NodeKind::Mapping(_) => "a mapping",
        }
    }

    /// Where the field at `path` (as `domain::validate_spec` writes it, e.g.
    /// `spec.config.pg_stat_statements.max` or `spec.extensions[1].name`) is
    /// written: the key's position for a mapping entry, the item's for a
    /// sequence element. Falls back to the deepest ancestor that exists (a
    /// defaulted field has no line of its own).
    pub fn locate(&self, path: &str) -> Position {
        let mut node = self;
        let mut at = self.pos;
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let Some((index, tail)) = after.split_once(']') else {
                    break;
                };
                let item = match (&node.kind, index.parse::<usize>()) {
                    (NodeKind::Sequence(items), Ok(i)) => items.get(i),
                    _ => None,
                };
                let Some(item) = item else { break };
                node = item;
                at = item.pos;
                rest = tail.strip_prefix('.').unwrap_or(tail);
                continue;
            }
            let NodeKind::Mapping(entries) = &node.kind else {
                break;
            };
            // Keys may contain dots (`pg_stat_statements.max`): take the
            // longest key that the path continues with.
            let found =
                entries
                    .iter()
                    .filter_map(|(k, v)| {
                        let key = k.as_str()?;
                        let tail = rest.strip_prefix(key)?;
                        (tail.is_empty() || tail.starts_with('.') || tail.starts_with('['))
                            .then_some((key.len(), k, v, tail))
                    })
                    .max_by_key(|(len, ..)| *len);
            let Some((_, k, v, tail)) = found else { break };
            at = k.pos;
            node = v;
            rest = tail.strip_prefix('.').unwrap_or(tail);
        }
        at
    }
}

pub fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// One `---` document of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `None` for a document that holds nothing (empty or comments only).
    pub root: Option<Node>,
    pub pos: Position,
}

/// A file that is not YAML: what the parser said and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Position,
    pub message: String,
}

/// Parses every document of a YAML stream.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        pos: Position::from(*e.marker()),
        message: e.info().to_owned(),
    })?;
    if let Some(message) = builder.error {
        return Err(message);
    }
    Ok(builder.documents)
}

enum Open {
    Sequence(Vec<Node>, Position, usize),
    Mapping(Vec<(Node, Node)>, Option<Node>, Position, usize),
}

/// The most nodes the aliases of one file may copy. A file's own nodes are
/// bounded by its size, but each alias copies its anchor's whole tree, and
/// aliases of aliases multiply: a few hundred bytes could otherwise expand
/// to billions of nodes and exhaust the control plane's memory.
pub const MAX_ALIAS_NODES: usize = 100_000;

#[derive(Default)]
struct TreeBuilder {
    documents: Vec<Document>,
    document_pos: Option<Position>,
    stack: Vec<Open>,
    root: Option<Node>,
    /// Anchored nodes with their sizes in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes copied by aliases so far.
    alias_nodes: usize,
    error: Option<SyntaxError>,
}

fn size(node: &Node) -> usize {
    1 + match &node.kind {
        NodeKind::Scalar { .. } => 0,
        NodeKind::Sequence(items) => items.iter().map(size).sum(),
        NodeKind::Mapping(entries) => entries.iter().map(|(k, v)| size(k) + size(v)).sum(),
    }
}

impl TreeBuilder {
    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let nodes = size(&node);
            self.anchors.insert(anchor, (node.clone(), nodes));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Sequence(items, ..)) => items.push(node),
            Some(Open::Mapping(entries, key, ..)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Position::from(mark);
        match ev {
            Event::DocumentStart => {
                self.document_pos = Some(pos);
                self.root = None;
            }
            Event::DocumentEnd => {
                let root = self.root.take().filter(|n| !n.is_null());
                self.documents.push(Document {
                    pos: root
                        .as_ref()
                        .map(|n| n.pos)
                        .or(self.document_pos)
                        .unwrap_or(pos),
                    root,
                });
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                self.complete(
                    Node {
                        kind: NodeKind::Scalar { text, plain },
                        pos,
                    },
                    anchor,
                );
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((_, nodes)) if self.alias_nodes + nodes > MAX_ALIAS_NODES => {
                    self.error.get_or_insert(SyntaxError {
                        pos,
                        message: format!(
                            "aliases copy more than {MAX_ALIAS_NODES} nodes; write the values out or use fewer aliases"
                        ),
                    });
                }
                Some((node, nodes)) => {
                    self.alias_nodes += nodes;
                    let node = Node {
                        pos,
                        ..node.clone()
                    };
                    self.complete(node, 0);
                }
                None => {
                    self.error.get_or_insert(SyntaxError {
                        pos,
                        message: "alias to an unknown anchor".to_owned(),
                    });
                }
            },
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Open::Sequence(Vec::new(), pos, anchor));
            }
            Event::MappingStart(anchor, _) => {
                self.stack
                    .push(Open::Mapping(Vec::new(), None, pos, anchor));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Sequence(items, pos, anchor)) => (
                        Node {
                            // A block collection's start event comes late
                            // (after its first key); its first item is where
                            // it is written.
                            pos: items.first().map_or(pos, |i| i.pos.min(pos)),
                            kind: NodeKind::Sequence(items),
                        },
                        anchor,
                    ),
                    Some(Open::Mapping(entries, _, pos, anchor)) => (
                        Node {
                            pos: entries.first().map_or(pos, |(k, _)| k.pos.min(pos)),
                            kind: NodeKind::Mapping(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                self.complete(node, anchor);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse_documents("a: 1\nb:\n  c: [x, y]\n").unwrap();
        let root = docs[0].root.as_ref().unwrap();
        assert_eq!(root.locate("a"), Position { line: 1, column: 1 });
        assert_eq!(root.locate("b.c"), Position { line: 3, column: 3 });
        assert_eq!(
            root.locate("b.c[1]"),
            Position {
                line: 3,
                column: 10
            }
        );
        // Missing fields fall back to the deepest ancestor.
        assert_eq!(root.locate("b.d"), Position { line: 2, column: 1 });
    }

    #[test]
    fn dotted_keys_are_matched_whole() {
        let docs = parse_documents("config:\n  a: 1\n  a.b: 2\n").unwrap();
        let root = docs[0].root.as_ref().unwrap();
        assert_eq!(root.locate("config.a.b").line, 3);
        assert_eq!(root.locate("config.a").line, 2);
    }

    #[test]
    fn empty_and_comment_only_documents_hold_nothing() {
        let docs = parse_documents("# nothing\n---\n# still nothing\n---\na: 1\n").unwrap();
        let roots: Vec<&Document> = docs.iter().filter(|d| d.root.is_some()).collect();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].pos.line, 5);
        assert!(parse_documents("")
            .unwrap()
            .iter()
            .all(|d| d.root.is_none()));
    }

    #[test]
    fn aliases_cannot_multiply_a_small_file_into_a_huge_tree() {
        let mut text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n".to_owned();
        for i in 1..9 {
            let p = i - 1;
            text.push_str(&format!("l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"));
        }
        let err = parse_documents(&text).unwrap_err();
        assert!(err.message.contains("aliases copy more than"), "{err:?}");
        assert_eq!(err.pos.line, 5, "the first alias past the limit");
        let shared = parse_documents("a: &c {work_mem: 16MB}\nb: *c\n").unwrap();
        let root = shared[0].root.as_ref().unwrap();
        assert_eq!(
            root.entry("a").unwrap().1.kind,
            root.entry("b").unwrap().1.kind,
            "an alias within the limit is its anchor's value"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse_documents("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
    }
}
