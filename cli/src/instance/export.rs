//! `instance export`: an instance's declared spec as a manifest, to move it
//! into git (`pgplane source add` then manages it once adopted).

use serde_json::Value;

/// The manifest of `inst`: its declared spec, without what only applies
/// when an instance is created (`restore`).
pub fn manifest(inst: &api::Instance) -> String {
    let mut spec = serde_json::to_value(&inst.spec).expect("a spec serialises");
    if let Value::Object(map) = &mut spec {
        map.remove("restore");
        map.retain(|_, v| !v.is_null());
    }
    let doc = serde_json::json!({
        "apiVersion": "pgplane.io/v1",
        "kind": "PostgresInstance",
        "metadata": { "name": inst.name },
        "spec": spec,
    });
    let mut out = String::new();
    block(&doc, 0, &mut out);
    out
}

/// Block-style YAML of a JSON value; strings are double-quoted (JSON's
/// escapes are YAML's), so no value changes type or meaning.
fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        block(v, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        block(v, indent, out);
                    }
                    scalar => out.push_str(&format!("{pad}{k}: {}\n", inline(scalar))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        block(item, indent + 2, &mut inner);
                        // The first key goes on the dash's line.
                        let inner = inner.trim_start();
                        out.push_str(&format!("{pad}- {inner}"));
                    }
                    other => out.push_str(&format!("{pad}- {}\n", inline(other))),
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{}\n", inline(scalar))),
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_values_keep_their_types_and_layout() {
        let mut out = String::new();
        block(
            &serde_json::json!({
                "a": {"b": "16MB", "n": 3, "t": true},
                "list": [{"name": "hstore", "version": "1.8"}, {"name": "x"}],
                "empty": [],
                "odd": "yes: no #1"
            }),
            0,
            &mut out,
        );
        assert_eq!(
            out,
            "a:\n  b: \"16MB\"\n  n: 3\n  t: true\nempty: []\nlist:\n- name: \"hstore\"\n  version: \"1.8\"\n- name: \"x\"\nodd: \"yes: no #1\"\n"
        );
    }
}
