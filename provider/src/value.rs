//! Terraform values as they travel in `DynamicValue`: msgpack (cty's
//! encoding) with unknown values as a msgpack extension, or JSON (raw state).
//!
//! The model is untyped: objects and maps are both [`Value::Map`], lists and
//! sets both [`Value::List`], because their encodings are the same. The
//! schema gives the types back where they matter ([`crate::schema`]).

use std::collections::BTreeMap;

/// cty's marker for an unknown value: msgpack fixext1, type 0, data 0.
const UNKNOWN_BYTES: [u8; 3] = [0xd4, 0, 0];

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// Known only after apply.
    Unknown,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("invalid msgpack value: {0}")]
    Msgpack(String),
    #[error("invalid JSON value: {0}")]
    Json(#[from] serde_json::Error),
    #[error("number {0:?} is not a number")]
    Number(String),
    #[error("map key is not a string")]
    MapKey,
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }

    /// Known all the way down (no unknown anywhere inside).
    pub fn is_wholly_known(&self) -> bool {
        match self {
            Value::Unknown => false,
            Value::List(items) => items.iter().all(Value::is_wholly_known),
            Value::Map(m) => m.values().all(Value::is_wholly_known),
            _ => true,
        }
    }

    /// An attribute of an object; `Null` when absent or when `self` is no object.
    pub fn get(&self, name: &str) -> &Value {
        match self {
            Value::Map(m) => m.get(name).unwrap_or(&Value::Null),
            _ => &Value::Null,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    pub fn opt_string(s: Option<impl Into<String>>) -> Value {
        s.map(|s| Value::String(s.into())).unwrap_or(Value::Null)
    }

    /// Strings of a set, list or map of strings (values only). `None` when
    /// the value or an element is not known.
    pub fn strings(&self) -> Option<Vec<String>> {
        match self {
            Value::Null => Some(Vec::new()),
            Value::List(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => None,
        }
    }

    /// A map of strings. `None` when not known.
    pub fn string_map(&self) -> Option<BTreeMap<String, String>> {
        match self {
            Value::Null => Some(BTreeMap::new()),
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect(),
            _ => None,
        }
    }

    pub fn object(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// Sets an attribute of an object (no-op on anything else).
    pub fn set(&mut self, name: &str, value: Value) {
        if let Value::Map(m) = self {
            m.insert(name.to_owned(), value);
        }
    }

    // ---- msgpack ----

    pub fn from_msgpack(bytes: &[u8]) -> Result<Value, ValueError> {
        let mut rd = bytes;
        let v =
            rmpv::decode::read_value(&mut rd).map_err(|e| ValueError::Msgpack(e.to_string()))?;
        Value::from_rmpv(v)
    }

    fn from_rmpv(v: rmpv::Value) -> Result<Value, ValueError> {
        use rmpv::Value as M;
        Ok(match v {
            M::Nil => Value::Null,
            M::Boolean(b) => Value::Bool(b),
            M::Integer(i) => Value::Number(
                i.as_i64()
                    .map(|i| i as f64)
                    .or_else(|| i.as_u64().map(|u| u as f64))
                    .or_else(|| i.as_f64())
                    .ok_or_else(|| ValueError::Number(i.to_string()))?,
            ),
            M::F32(f) => Value::Number(f64::from(f)),
            M::F64(f) => Value::Number(f),
            // Numbers too precise for a float travel as strings; strings
            // for string attributes too. The schema decides which it is.
            M::String(s) => Value::String(
                s.into_str()
                    .ok_or_else(|| ValueError::Msgpack("string is not UTF-8".into()))?,
            ),
            M::Binary(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
            M::Array(items) => Value::List(
                items
                    .into_iter()
                    .map(Value::from_rmpv)
                    .collect::<Result<_, _>>()?,
            ),
            M::Map(pairs) => {
                let mut m = BTreeMap::new();
                for (k, v) in pairs {
                    let k = match k {
                        M::String(s) => s.into_str().ok_or(ValueError::MapKey)?,
                        _ => return Err(ValueError::MapKey),
                    };
                    m.insert(k, Value::from_rmpv(v)?);
                }
                Value::Map(m)
            }
            // Type 0 is cty's unknown; newer Terraform sends refined
            // unknowns under other types. Every extension means unknown.
            M::Ext(_, _) => Value::Unknown,
        })
    }

    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_msgpack(&mut out);
        out
    }

    fn write_msgpack(&self, out: &mut Vec<u8>) {
        use rmp::encode as e;
        // Writing into a Vec cannot fail.
        match self {
            Value::Null => e::write_nil(out).expect("vec write"),
            Value::Unknown => out.extend_from_slice(&UNKNOWN_BYTES),
            Value::Bool(b) => e::write_bool(out, *b).expect("vec write"),
            Value::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    e::write_sint(out, *n as i64).expect("vec write");
                } else {
                    e::write_f64(out, *n).expect("vec write");
                }
            }
            Value::String(s) => e::write_str(out, s).expect("vec write"),
            Value::List(items) => {
                e::write_array_len(out, items.len() as u32).expect("vec write");
                for i in items {
                    i.write_msgpack(out);
                }
            }
            Value::Map(m) => {
                e::write_map_len(out, m.len() as u32).expect("vec write");
                for (k, v) in m {
                    e::write_str(out, k).expect("vec write");
                    v.write_msgpack(out);
                }
            }
        }
    }

    // ---- JSON (raw state) ----

    pub fn from_json(bytes: &[u8]) -> Result<Value, ValueError> {
        let j: serde_json::Value = serde_json::from_slice(bytes)?;
        Ok(Value::from_json_value(j))
    }

    fn from_json_value(j: serde_json::Value) -> Value {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
            J::String(s) => Value::String(s),
            J::Array(items) => Value::List(items.into_iter().map(Value::from_json_value).collect()),
            J::Object(m) => Value::Map(
                m.into_iter()
                    .map(|(k, v)| (k, Value::from_json_value(v)))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_round_trip_with_unknowns() {
        let v = Value::object([
            ("name", Value::string("orders")),
            ("port", Value::Number(5432.0)),
            ("ratio", Value::Number(0.5)),
            ("id", Value::Unknown),
            ("extensions", Value::List(vec![Value::string("hstore")])),
            ("config", Value::Null),
            ("ok", Value::Bool(true)),
        ]);
        let bytes = v.to_msgpack();
        assert!(bytes.windows(3).any(|w| w == UNKNOWN_BYTES));
        assert_eq!(Value::from_msgpack(&bytes).unwrap(), v);
    }

    #[test]
    fn any_extension_type_is_unknown() {
        // fixext2 of type 12 (a refined unknown).
        assert_eq!(
            Value::from_msgpack(&[0xd5, 12, 1, 2]).unwrap(),
            Value::Unknown
        );
    }

    #[test]
    fn numbers_arrive_as_int_float_or_string() {
        let mut b = Vec::new();
        rmp::encode::write_u64(&mut b, 5432).unwrap();
        assert_eq!(Value::from_msgpack(&b).unwrap(), Value::Number(5432.0));
        let mut b = Vec::new();
        rmp::encode::write_f32(&mut b, 1.5).unwrap();
        assert_eq!(Value::from_msgpack(&b).unwrap(), Value::Number(1.5));
        let mut b = Vec::new();
        rmp::encode::write_str(&mut b, "5432").unwrap();
        assert_eq!(Value::from_msgpack(&b).unwrap(), Value::string("5432"));
    }

    #[test]
    fn json_state() {
        let v = Value::from_json(br#"{"name":"a","port":5432,"extensions":["x"],"config":null}"#)
            .unwrap();
        assert_eq!(v.get("port"), &Value::Number(5432.0));
        assert_eq!(v.get("extensions").strings().unwrap(), vec!["x".to_owned()]);
        assert!(v.get("config").is_null());
    }
}
