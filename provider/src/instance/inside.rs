//! The `role` and `database` blocks of `pgplane_instance` ↔ the spec's
//! `roles` and `databases`. Optional attributes left out of a block stay
//! null in the state while the control plane's value is their default, so a
//! refresh shows only real changes.

use std::collections::BTreeSet;

use domain::{Database, Ensure, Extension, InstanceSpec, Role};

use crate::value::Value;

/// The declared roles of a (wholly known) resource value; `None` when a
/// value has the wrong shape (unknown values are not read here).
pub fn roles_from(v: &Value) -> Option<Vec<Role>> {
    blocks(v.get("role"))?
        .iter()
        .map(|b| {
            let defaults = Role::new(b.get("name").as_str()?);
            Some(Role {
                login: bool_or(b.get("login"), defaults.login)?,
                inherit: bool_or(b.get("inherit"), defaults.inherit)?,
                member_of: b.get("member_of").strings()?,
                connection_limit: match b.get("connection_limit") {
                    Value::Null => defaults.connection_limit,
                    Value::Number(n) => *n as i32,
                    _ => return None,
                },
                ensure: ensure(b.get("ensure"))?,
                ..defaults
            })
        })
        .collect()
}

/// The declared databases of a resource value.
pub fn databases_from(v: &Value) -> Option<Vec<Database>> {
    blocks(v.get("database"))?
        .iter()
        .map(|b| {
            let owner = b
                .get("owner")
                .as_str()
                .unwrap_or(domain::inside::CLIENT_ROLE);
            Some(Database {
                extensions: b
                    .get("extensions")
                    .strings()?
                    .iter()
                    .map(|e| Extension::parse(e))
                    .collect(),
                schemas: b.get("schemas").strings()?,
                ensure: ensure(b.get("ensure"))?,
                ..Database::new(b.get("name").as_str()?, owner)
            })
        })
        .collect()
}

fn blocks(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Null => Some(&[]),
        Value::List(items) => Some(items),
        _ => None,
    }
}

fn bool_or(v: &Value, default: bool) -> Option<bool> {
    match v {
        Value::Null => Some(default),
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn ensure(v: &Value) -> Option<Ensure> {
    match v.as_str() {
        None if v.is_null() => Some(Ensure::Present),
        Some("present") => Some(Ensure::Present),
        Some("absent") => Some(Ensure::Absent),
        // Reported by validation at the attribute.
        _ => Some(Ensure::Present),
    }
}

/// The `role` blocks for the control plane's `spec`, in `prior`'s order,
/// with `prior`'s nulls kept where the value is the default.
pub fn refreshed_roles(prior: &Value, spec: &InstanceSpec) -> Value {
    let prior = blocks(prior).unwrap_or(&[]);
    let mut out: Vec<(usize, Value)> = spec
        .roles
        .iter()
        .map(|r| {
            let (at, p) = find(prior, &r.name);
            let d = Role::new(&r.name);
            let mut b = Value::Map(Default::default());
            b.set("name", Value::string(&r.name));
            b.set("login", keep_default(p.get("login"), r.login, d.login));
            b.set(
                "inherit",
                keep_default(p.get("inherit"), r.inherit, d.inherit),
            );
            b.set("member_of", refreshed_set(p.get("member_of"), &r.member_of));
            b.set(
                "connection_limit",
                match (p.get("connection_limit"), r.connection_limit) {
                    (Value::Null, -1) => Value::Null,
                    (_, n) => Value::Number(f64::from(n)),
                },
            );
            b.set("ensure", refreshed_ensure(p.get("ensure"), r.ensure));
            (at, b)
        })
        .collect();
    out.sort_by_key(|(at, _)| *at);
    Value::List(out.into_iter().map(|(_, b)| b).collect())
}

/// The `database` blocks for `spec`, as [`refreshed_roles`].
pub fn refreshed_databases(prior: &Value, spec: &InstanceSpec) -> Value {
    let prior = blocks(prior).unwrap_or(&[]);
    let mut out: Vec<(usize, Value)> = spec
        .databases
        .iter()
        .map(|d| {
            let (at, p) = find(prior, &d.name);
            let mut b = Value::Map(Default::default());
            b.set("name", Value::string(&d.name));
            b.set(
                "owner",
                match (p.get("owner"), d.owner.as_str()) {
                    (Value::Null, domain::inside::CLIENT_ROLE) => Value::Null,
                    (_, owner) => Value::string(owner),
                },
            );
            let exts: Vec<String> = d.extensions.iter().map(Extension::display).collect();
            b.set("extensions", refreshed_set(p.get("extensions"), &exts));
            b.set("schemas", refreshed_set(p.get("schemas"), &d.schemas));
            b.set("ensure", refreshed_ensure(p.get("ensure"), d.ensure));
            (at, b)
        })
        .collect();
    out.sort_by_key(|(at, _)| *at);
    Value::List(out.into_iter().map(|(_, b)| b).collect())
}

fn find<'a>(prior: &'a [Value], name: &str) -> (usize, &'a Value) {
    prior
        .iter()
        .enumerate()
        .find(|(_, b)| b.get("name").as_str() == Some(name))
        .unwrap_or((usize::MAX, &Value::Null))
}

fn keep_default(prior: &Value, remote: bool, default: bool) -> Value {
    match prior {
        Value::Null if remote == default => Value::Null,
        _ => Value::Bool(remote),
    }
}

fn refreshed_ensure(prior: &Value, remote: Ensure) -> Value {
    match (prior, remote) {
        (Value::Null, Ensure::Present) => Value::Null,
        (_, Ensure::Present) => Value::string("present"),
        (_, Ensure::Absent) => Value::string("absent"),
    }
}

fn refreshed_set(prior: &Value, remote: &[String]) -> Value {
    let remote_set: BTreeSet<&str> = remote.iter().map(String::as_str).collect();
    match prior.strings() {
        Some(p) if p.iter().map(String::as_str).collect::<BTreeSet<_>>() == remote_set => {
            prior.clone()
        }
        _ if remote.is_empty() => Value::Null,
        _ => Value::List(remote_set.into_iter().map(Value::string).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn blocks_read_with_defaults_and_refresh_keeps_nulls() {
        let config = block(&[
            (
                "role",
                Value::List(vec![block(&[
                    ("name", Value::string("app")),
                    ("member_of", Value::List(vec![Value::string("pg_monitor")])),
                ])]),
            ),
            (
                "database",
                Value::List(vec![block(&[
                    ("name", Value::string("shop")),
                    ("owner", Value::string("app")),
                    ("extensions", Value::List(vec![Value::string("hstore=1.8")])),
                ])]),
            ),
        ]);
        let spec = InstanceSpec {
            roles: roles_from(&config).unwrap(),
            databases: databases_from(&config).unwrap(),
            ..InstanceSpec::default()
        };
        assert_eq!(spec.roles[0].connection_limit, -1);
        assert!(spec.roles[0].login);
        assert_eq!(
            spec.databases[0].extensions[0].version.as_deref(),
            Some("1.8")
        );
        let roles = refreshed_roles(config.get("role"), &spec);
        let r = &blocks(&roles).unwrap()[0];
        assert!(r.get("login").is_null() && r.get("connection_limit").is_null());
        assert_eq!(
            r.get("member_of"),
            blocks(config.get("role")).unwrap()[0].get("member_of")
        );
        let dbs = refreshed_databases(config.get("database"), &spec);
        let d = &blocks(&dbs).unwrap()[0];
        assert_eq!(d.get("owner").as_str(), Some("app"));
        assert!(d.get("schemas").is_null());
        assert!(roles_from(&block(&[])).unwrap().is_empty());
    }
}
