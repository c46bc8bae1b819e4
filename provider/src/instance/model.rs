//! Terraform values ↔ the control plane's spec and instance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api::{Credentials, Instance};
use domain::quantity::{normalize_setting, parse_bytes, parse_cpu};
use domain::spec::{DEFAULT_CPU, DEFAULT_MEMORY, DEFAULT_POSTGRES_VERSION, DEFAULT_STORAGE};
use domain::{ConnectionInfo, Extension, InstanceSpec, Resources};

use crate::value::Value;

/// The attributes only the control plane sets.
pub const COMPUTED_ONLY: [&str; 12] = [
    "id",
    "org",
    "owner",
    "state",
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "connection_uri",
    "read_write_uri",
    "read_only_uri",
];

/// Optional attributes with a default the control plane fills in.
pub const DEFAULTS: [(&str, &str); 7] = [
    ("postgres_version", DEFAULT_POSTGRES_VERSION),
    ("synchronous", "off"),
    ("cpu", DEFAULT_CPU),
    ("memory", DEFAULT_MEMORY),
    ("storage", DEFAULT_STORAGE),
    ("backup_schedule", domain::backup::DEFAULT_SCHEDULE),
    ("backup_retention", DEFAULT_RETENTION),
];

/// `backup_retention` when not set: the domain's default, as written.
pub const DEFAULT_RETENTION: &str = "7d";

/// The attributes that only matter when the instance is created: changing
/// one replaces the instance.
pub const RESTORE_ATTRIBUTES: [&str; 3] = ["restore_from", "restore_at", "restore_lsn"];

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// The timeout of `op` from the `timeouts` block (validated at plan time).
pub fn timeout(v: &Value, op: Operation) -> Duration {
    v.get("timeouts")
        .get(op.as_str())
        .as_str()
        .and_then(|s| domain::duration::parse_positive(s).ok())
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// Whether the resource value declares the instance stopped (unset: no).
pub fn stopped(v: &Value) -> bool {
    matches!(v.get("stopped"), Value::Bool(true))
}

/// Whether `inst` is stopped or being stopped, as the control plane says.
pub fn is_stopped(inst: &Instance) -> bool {
    inst.spec.stopped || inst.state == domain::State::Stopped
}

/// The desired spec a (wholly known) resource value declares; `base` gives
/// what the configuration leaves unset and the run state (`stopped`
/// is changed by stop and start, not by an update).
pub fn spec_from(v: &Value, base: Option<&InstanceSpec>) -> Option<InstanceSpec> {
    let s = |name: &str, default: &str| -> Option<String> {
        match v.get(name) {
            Value::Null => Some(default.to_owned()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    };
    let mut extensions: Vec<Extension> = v
        .get("extensions")
        .strings()?
        .into_iter()
        .map(|text| Extension::parse(&text))
        .collect();
    extensions.sort();
    extensions.dedup();
    let defaults = InstanceSpec::default();
    let base = base.unwrap_or(&defaults);
    Some(InstanceSpec {
        postgres_version: s("postgres_version", DEFAULT_POSTGRES_VERSION)?,
        replicas: match v.get("replicas") {
            Value::Null => base.replicas,
            // An invalid count is reported by validation, at its attribute.
            Value::Number(n) if *n >= 0.0 && n.fract() == 0.0 => {
                (*n).min(f64::from(u32::MAX)) as u32
            }
            _ => return None,
        },
        // An invalid value is reported by validation, at its attribute.
        synchronous: domain::Synchronous::parse(&s("synchronous", "off")?).unwrap_or_default(),
        resources: Resources {
            cpu: s("cpu", DEFAULT_CPU)?,
            memory: s("memory", DEFAULT_MEMORY)?,
        },
        storage: s("storage", DEFAULT_STORAGE)?,
        extensions,
        config: v.get("config").string_map()?,
        stopped: base.stopped,
        databases: super::inside::databases_from(v)?,
        roles: super::inside::roles_from(v)?,
        superuser_access: match v.get("superuser_access") {
            Value::Null => false,
            Value::Bool(b) => *b,
            _ => return None,
        },
        backup: domain::BackupPolicy {
            schedule: s("backup_schedule", domain::backup::DEFAULT_SCHEDULE)?,
            // An invalid value is reported by validation, at its attribute.
            retention: domain::Retention::parse(&s("backup_retention", DEFAULT_RETENTION)?)
                .unwrap_or_default(),
        },
        restore: match v.get("restore_from") {
            Value::String(from) => Some(domain::RestoreSpec {
                from: from.clone(),
                at: v.get("restore_at").as_str().map(str::to_owned),
                lsn: v.get("restore_lsn").as_str().map(str::to_owned),
            }),
            _ => base.restore.clone(),
        },
    })
}

/// The resource's value for `inst`, keeping `prior`'s spelling wherever the
/// control plane's value means the same thing (extension order, `16MB` vs
/// `16384kB`, `1Gi` vs `1024Mi`, empty vs unset), so refresh shows only
/// real changes.
pub fn refreshed(prior: &Value, inst: &Instance, credentials: Option<&Credentials>) -> Value {
    let spec = &inst.spec;
    let same = |name: &str, remote: &str, eq: &dyn Fn(&str, &str) -> bool| -> Value {
        match prior.get(name).as_str() {
            Some(p) if eq(p, remote) => Value::string(p),
            _ => Value::string(remote),
        }
    };
    let cpu_eq = |a: &str, b: &str| {
        a == b
            || parse_cpu(a)
                .ok()
                .is_some_and(|x| parse_cpu(b).ok() == Some(x))
    };
    let bytes_eq = |a: &str, b: &str| {
        a == b
            || parse_bytes(a)
                .ok()
                .is_some_and(|x| parse_bytes(b).ok() == Some(x))
    };
    let str_eq = |a: &str, b: &str| a == b;

    let mut v = Value::Map(BTreeMap::new());
    v.set("name", Value::string(&inst.name));
    v.set(
        "postgres_version",
        same("postgres_version", &spec.postgres_version, &str_eq),
    );
    v.set("cpu", same("cpu", &spec.resources.cpu, &cpu_eq));
    v.set("memory", same("memory", &spec.resources.memory, &bytes_eq));
    v.set("storage", same("storage", &spec.storage, &bytes_eq));
    v.set("replicas", Value::Number(f64::from(spec.replicas)));
    v.set(
        "superuser_access",
        match (prior.get("superuser_access"), spec.superuser_access) {
            (Value::Null, false) => Value::Null,
            (_, b) => Value::Bool(b),
        },
    );
    v.set(
        "synchronous",
        same(
            "synchronous",
            &spec.synchronous.to_string(),
            &|a: &str, b: &str| {
                domain::Synchronous::parse(a).ok() == domain::Synchronous::parse(b).ok()
            },
        ),
    );
    v.set(
        "backup_schedule",
        same("backup_schedule", &spec.backup.schedule, &str_eq),
    );
    v.set(
        "backup_retention",
        same(
            "backup_retention",
            &spec.backup.retention.spec_value(),
            &|a: &str, b: &str| {
                domain::Retention::parse(a).ok() == domain::Retention::parse(b).ok()
            },
        ),
    );
    let restore = spec.restore.as_ref();
    v.set(
        "restore_from",
        Value::opt_string(restore.map(|r| r.from.clone())),
    );
    v.set(
        "restore_at",
        match (prior.get("restore_at"), restore.and_then(|r| r.at.clone())) {
            (Value::String(p), Some(at)) if same_time(p, &at) => Value::string(p),
            (_, at) => Value::opt_string(at),
        },
    );
    v.set(
        "restore_lsn",
        Value::opt_string(restore.and_then(|r| r.lsn.clone())),
    );
    v.set(
        "extensions",
        refreshed_extensions(prior.get("extensions"), spec),
    );
    v.set(
        "config",
        refreshed_config(prior.get("config"), &spec.config),
    );
    v.set("stopped", Value::Bool(is_stopped(inst)));
    v.set("id", Value::string(inst.id.to_string()));
    v.set("org", Value::string(&inst.org));
    v.set("owner", Value::string(&inst.owner));
    v.set("state", Value::string(inst.state.as_str()));
    set_connection(&mut v, inst.connection.as_ref(), credentials);
    if credentials.is_none() && same_endpoint(prior, &v) {
        for name in [
            "password",
            "connection_uri",
            "read_write_uri",
            "read_only_uri",
        ] {
            v.set(name, prior.get(name).clone());
        }
    }
    v.set("timeouts", prior.get("timeouts").clone());
    v.set(
        "role",
        super::inside::refreshed_roles(prior.get("role"), spec),
    );
    v.set(
        "database",
        super::inside::refreshed_databases(prior.get("database"), spec),
    );
    v
}

/// Sets `host`, `port`, `dbname`, `user`, `password` and
/// `connection_uri` from `credentials`, or without them the first four from
/// `connection` (null when absent).
pub fn set_connection(
    v: &mut Value,
    connection: Option<&ConnectionInfo>,
    credentials: Option<&Credentials>,
) {
    let endpoint = |host: &str, port: u16, database: &str, user: &str| {
        (
            Value::string(host),
            Value::Number(f64::from(port)),
            Value::string(database),
            Value::string(user),
        )
    };
    let (host, port, database, user) = match (credentials, connection) {
        (Some(c), _) => endpoint(&c.host, c.port, &c.database, &c.user),
        (None, Some(c)) => endpoint(&c.host, c.port, &c.database, &c.user),
        (None, None) => (Value::Null, Value::Null, Value::Null, Value::Null),
    };
    v.set("host", host);
    v.set("port", port);
    v.set("dbname", database);
    v.set("user", user);
    v.set(
        "password",
        Value::opt_string(credentials.map(|c| c.password.clone())),
    );
    v.set(
        "connection_uri",
        Value::opt_string(credentials.map(|c| c.uri.clone())),
    );
    // A control plane that sends no multi-host URIs: the plain one.
    let or_uri = |u: &str, c: &Credentials| match u.is_empty() {
        true => c.uri.clone(),
        false => u.to_owned(),
    };
    v.set(
        "read_write_uri",
        Value::opt_string(credentials.map(|c| or_uri(&c.read_write_uri, c))),
    );
    v.set(
        "read_only_uri",
        Value::opt_string(credentials.map(|c| or_uri(&c.read_only_uri, c))),
    );
}

/// Whether `a` and `b` name the same server, database and role.
fn same_endpoint(a: &Value, b: &Value) -> bool {
    !b.get("host").is_null()
        && ["host", "port", "dbname", "user"]
            .iter()
            .all(|n| a.get(n) == b.get(n))
}

/// Whether two RFC 3339 spellings name the same instant.
fn same_time(a: &str, b: &str) -> bool {
    a == b || domain::backup::parse_time(a).ok() == domain::backup::parse_time(b).ok()
}

/// Whether the connection URI must be fetched to refresh `prior` for `inst`.
pub fn needs_credentials(prior: &Value, inst: &Instance) -> bool {
    if inst.connection.is_none() {
        return false;
    }
    let mut current = Value::Map(BTreeMap::new());
    set_connection(&mut current, inst.connection.as_ref(), None);
    let multi_host = inst
        .connection
        .as_ref()
        .is_some_and(|c| c.members.len() > 1);
    let listed = prior
        .get("read_write_uri")
        .as_str()
        .is_some_and(|u| u.contains("target_session_attrs"));
    prior.get("connection_uri").as_str().is_none()
        || prior.get("password").as_str().is_none()
        || !same_endpoint(prior, &current)
        || multi_host != listed
}

fn refreshed_extensions(prior: &Value, spec: &InstanceSpec) -> Value {
    let remote: BTreeSet<String> = spec
        .extensions
        .iter()
        .filter(|e| e.ensure == domain::Ensure::Present)
        .map(|e| e.display())
        .collect();
    match prior.strings() {
        Some(p) if p.iter().cloned().collect::<BTreeSet<_>>() == remote => prior.clone(),
        _ if remote.is_empty() && prior.is_null() => Value::Null,
        _ => Value::List(remote.into_iter().map(Value::String).collect()),
    }
}

fn refreshed_config(prior: &Value, remote: &BTreeMap<String, String>) -> Value {
    if remote.is_empty() && (prior.is_null() || prior == &Value::Map(BTreeMap::new())) {
        return prior.clone();
    }
    let prior_map = prior.string_map().unwrap_or_default();
    Value::Map(
        remote
            .iter()
            .map(|(k, v)| {
                let keep = prior_map
                    .get(k)
                    .filter(|p| normalize_setting(k, p) == normalize_setting(k, v));
                (k.clone(), Value::string(keep.unwrap_or(v)))
            })
            .collect(),
    )
}

/// `planned` with the computed attributes filled from `inst` (after apply):
/// the planned known values stay exactly as planned.
pub fn applied(planned: &Value, inst: &Instance, credentials: Option<&Credentials>) -> Value {
    let fresh = refreshed(&Value::Null, inst, credentials);
    let mut v = planned.clone();
    for name in COMPUTED_ONLY {
        if planned.get(name).is_unknown() || planned.get(name).is_null() {
            v.set(name, fresh.get(name).clone());
        }
    }
    v.set("state", fresh.get("state").clone());
    if planned.get("stopped").is_unknown() {
        v.set("stopped", Value::Bool(is_stopped(inst)));
    }
    without_unknowns(v)
}

/// Unknown values replaced by null (a new state must be wholly known).
pub fn without_unknowns(v: Value) -> Value {
    match v {
        Value::Unknown => Value::Null,
        Value::List(items) => Value::List(items.into_iter().map(without_unknowns).collect()),
        Value::Map(m) => Value::Map(
            m.into_iter()
                .map(|(k, v)| (k, without_unknowns(v)))
                .collect(),
        ),
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(spec: InstanceSpec) -> Instance {
        serde_json::from_value(serde_json::json!({
            "id": "6a0d1c2e-1f64-4b8e-9a7a-1d1f3b9c2a10",
            "org": "default", "name": "orders", "dataPlane": "local", "owner": "terraform",
            "state": "Up", "generation": 1, "observedGeneration": 1,
            "spec": spec, "observed": null, "observedAt": null,
            "connection": {"host": "127.0.0.1", "port": 5433, "database": "postgres", "user": "postgres"},
            "error": null, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn refresh_keeps_equivalent_spellings() {
        let mut spec = InstanceSpec::default();
        spec.config.insert("work_mem".into(), "16384kB".into());
        spec.extensions = vec![
            Extension::new("hstore"),
            Extension::new("pg_stat_statements"),
        ];
        spec.resources.memory = "1024Mi".into();
        let prior = Value::object([
            (
                "config",
                Value::Map([("work_mem".to_owned(), Value::string("16MB"))].into()),
            ),
            (
                "extensions",
                Value::List(vec![
                    Value::string("pg_stat_statements"),
                    Value::string("hstore"),
                ]),
            ),
            ("memory", Value::string("1Gi")),
            ("connection_uri", Value::string("postgres://x")),
            ("password", Value::string("secret")),
            ("host", Value::string("127.0.0.1")),
            ("port", Value::Number(5433.0)),
            ("dbname", Value::string("postgres")),
            ("user", Value::string("postgres")),
        ]);
        let inst = instance(spec);
        let v = refreshed(&prior, &inst, None);
        assert_eq!(v.get("config"), prior.get("config"));
        assert_eq!(v.get("extensions"), prior.get("extensions"));
        assert_eq!(v.get("memory"), &Value::string("1Gi"));
        assert_eq!(v.get("connection_uri"), &Value::string("postgres://x"));
        assert_eq!(v.get("password"), &Value::string("secret"));
        assert_eq!(v.get("owner"), &Value::string("terraform"));
        assert_eq!(v.get("stopped"), &Value::Bool(false));
        assert!(!needs_credentials(&prior, &inst));
        let mut moved = prior.clone();
        moved.set("port", Value::Number(5434.0));
        assert!(needs_credentials(&moved, &inst));
        assert_eq!(refreshed(&moved, &inst, None).get("password"), &Value::Null);
    }

    #[test]
    fn refresh_shows_real_changes_and_unset_stays_unset() {
        let mut spec = InstanceSpec::default();
        spec.config.insert("work_mem".into(), "32MB".into());
        let prior = Value::object([
            (
                "config",
                Value::Map([("work_mem".to_owned(), Value::string("16MB"))].into()),
            ),
            ("extensions", Value::Null),
        ]);
        let v = refreshed(&prior, &instance(spec), None);
        assert_eq!(v.get("config").get("work_mem"), &Value::string("32MB"));
        assert_eq!(v.get("extensions"), &Value::Null);
    }

    #[test]
    fn spec_from_applies_defaults_and_sorts() {
        let v = Value::object([
            (
                "extensions",
                Value::List(vec![Value::string("b"), Value::string("a")]),
            ),
            ("config", Value::Null),
            ("cpu", Value::string("2")),
        ]);
        let s = spec_from(&v, None).unwrap();
        assert_eq!(s.resources.cpu, "2");
        assert_eq!(s.postgres_version, "15");
        assert_eq!(s.extension_names().collect::<Vec<_>>(), ["a", "b"]);
        let unknown = Value::object([("config", Value::Unknown)]);
        assert!(spec_from(&unknown, None).is_none());
    }
}
