//! A serde `Deserializer` over a positioned YAML [`Node`]: every error
//! carries the field path and the position it came from.
//!
//! Unknown and duplicate keys do not stop deserialisation: they are
//! collected in an [`Issues`] sink (each with its own position) and skipped,
//! so one pass reports all of them. Any scalar reads as a string where a
//! string is wanted (`postgresVersion: 15`, `max_connections: 200`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::yaml::{is_null, Node, NodeKind, Position};

/// A problem at a field: where, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub pos: Position,
    pub message: String,
}

/// Problems found while deserialising that did not stop it.
pub type Issues = RefCell<Vec<Issue>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    pub message: String,
    pub path: Option<String>,
    pub pos: Option<Position>,
}

impl DeError {
    fn at(mut self, pos: Position, path: &str) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
            self.path = Some(path.to_owned());
        }
        self
    }

    fn new(message: String) -> Self {
        DeError {
            message,
            path: None,
            pos: None,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(msg.to_string())
    }
}

/// Deserialises `T` from `node`, whose field path is `path` (e.g. `spec`).
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &str,
    issues: &Issues,
) -> Result<T, DeError> {
    T::deserialize(NodeDeserializer {
        node,
        path: path.to_owned(),
        issues,
    })
}

pub fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

struct NodeDeserializer<'a, 'de> {
    node: &'de Node,
    path: String,
    issues: &'a Issues,
}

impl<'a, 'de> NodeDeserializer<'a, 'de> {
    fn invalid<V>(&self, expected: &str) -> Result<V, DeError> {
        let found = match &self.node.kind {
            NodeKind::Scalar { text, .. } if !self.node.is_null() => format!("{text:?}"),
            _ => self.node.describe().to_owned(),
        };
        Err(DeError::new(format!("expected {expected}, found {found}"))
            .at(self.node.pos, &self.path))
    }

    /// The entries of a mapping, minus duplicate keys (reported) and, for a
    /// struct, keys it does not have (reported with what is allowed).
    fn entries(&self, fields: Option<&'static [&'static str]>) -> Vec<(&'de Node, &'de Node)> {
        let entries: &'de [(Node, Node)] = match &self.node.kind {
            NodeKind::Mapping(entries) => entries,
            _ => &[],
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            let path = child_path(&self.path, key);
            if !seen.insert(key) {
                self.issues.borrow_mut().push(Issue {
                    path,
                    pos: k.pos,
                    message: format!("duplicate key {key:?}"),
                });
                continue;
            }
            if let Some(fields) = fields {
                if !fields.contains(&key) {
                    self.issues.borrow_mut().push(Issue {
                        path,
                        pos: k.pos,
                        message: format!("unknown field {key:?}; allowed: {}", fields.join(", ")),
                    });
                    continue;
                }
            }
            out.push((k, v));
        }
        out
    }
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_, 'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let (pos, path) = (self.node.pos, self.path.clone());
        let result: Result<V::Value, DeError> = match &self.node.kind {
            NodeKind::Scalar { text, plain: true } => {
                if is_null(text) {
                    visitor.visit_unit()
                } else if let Some(b) = parse_bool(text) {
                    visitor.visit_bool(b)
                } else if let Ok(n) = text.parse::<u64>() {
                    visitor.visit_u64(n)
                } else if let Ok(n) = text.parse::<i64>() {
                    visitor.visit_i64(n)
                } else if let Ok(n) = text.parse::<f64>() {
                    visitor.visit_f64(n)
                } else {
                    visitor.visit_str(text)
                }
            }
            NodeKind::Scalar { text, plain: false } => visitor.visit_str(text),
            NodeKind::Sequence(_) => return self.deserialize_seq(visitor),
            NodeKind::Mapping(_) => return self.deserialize_map(visitor),
        };
        result.map_err(|e| e.at(pos, &path))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Scalar { text, .. } if !self.node.is_null() => visitor
                .visit_str(text)
                .map_err(|e: DeError| e.at(self.node.pos, &self.path)),
            _ => self.invalid("a string"),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let NodeKind::Sequence(items) = &self.node.kind else {
            return self.invalid("a sequence");
        };
        let access = Items {
            items: items.iter().enumerate(),
            path: &self.path,
            issues: self.issues,
        };
        visitor
            .visit_seq(access)
            .map_err(|e| e.at(self.node.pos, &self.path))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if !matches!(self.node.kind, NodeKind::Mapping(_)) && !self.node.is_null() {
            return self.invalid("a mapping");
        }
        let entries = self.entries(None);
        self.visit_entries(entries, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if !matches!(self.node.kind, NodeKind::Mapping(_)) && !self.node.is_null() {
            return self.invalid("a mapping");
        }
        let entries = self.entries(Some(fields));
        self.visit_entries(entries, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 bytes byte_buf unit
        unit_struct tuple tuple_struct enum
    }
}

impl<'a, 'de> NodeDeserializer<'a, 'de> {
    fn visit_entries<V: Visitor<'de>>(
        &self,
        entries: Vec<(&'de Node, &'de Node)>,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let access = Entries {
            entries: entries.into_iter(),
            value: None,
            path: &self.path,
            issues: self.issues,
        };
        visitor
            .visit_map(access)
            .map_err(|e| e.at(self.node.pos, &self.path))
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

struct Items<'a, 'de, I: Iterator<Item = (usize, &'de Node)>> {
    items: I,
    path: &'a str,
    issues: &'a Issues,
}

impl<'de, I: Iterator<Item = (usize, &'de Node)>> SeqAccess<'de> for Items<'_, 'de, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        seed.deserialize(NodeDeserializer {
            node,
            path: format!("{}[{i}]", self.path),
            issues: self.issues,
        })
        .map(Some)
    }
}

struct Entries<'a, 'de> {
    entries: std::vec::IntoIter<(&'de Node, &'de Node)>,
    value: Option<(&'de Node, String)>,
    path: &'a str,
    issues: &'a Issues,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let path = child_path(self.path, key.as_str().unwrap_or_default());
        let k = seed
            .deserialize(NodeDeserializer {
                node: key,
                path: path.clone(),
                issues: self.issues,
            })
            .map_err(|e| e.at(key.pos, &path))?;
        self.value = Some((value, path));
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| DeError::new("value without a key".to_owned()))?;
        seed.deserialize(NodeDeserializer {
            node,
            path,
            issues: self.issues,
        })
    }
}
