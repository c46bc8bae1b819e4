//! Data sources: `pgplane_instance` (one, by name) and `pgplane_instances`
//! (the organisation's instances, optionally filtered by state), and
//! `pgplane_backups` (one instance's backups and restore window), and
//! `pgplane_extensions` (what a data plane can install).

use api::{ClientError, Instance};
use domain::State;

use crate::diag::{self, attr_path, Diagnostics};
use crate::instance::apply::{api_error, Ctx};
use crate::value::Value;

pub fn validate_instances(config: &Value) -> Diagnostics {
    match config.get("state").as_str() {
        Some(s) if State::parse(s).is_none() => vec![diag::error_at(
            attr_path("state"),
            "Unknown state",
            format!(
                "{s:?} is not a state; use one of {}",
                State::ALL.map(State::as_str).join(", ")
            ),
        )],
        _ => vec![],
    }
}

pub async fn read_instance(ctx: &Ctx, config: &Value) -> (Value, Diagnostics) {
    let name = config.get("name").as_str().unwrap_or_default();
    let inst = match ctx.client.get_instance(name).await {
        Ok(i) => i,
        Err(ClientError::Api { status: 404, .. }) => {
            return (
                Value::Null,
                vec![diag::error_at(
                    attr_path("name"),
                    "Instance not found",
                    format!("No instance {name:?} in the provider token's organisation."),
                )],
            )
        }
        Err(e) => return (Value::Null, api_error("Reading the instance", e)),
    };
    let creds = if inst.connection.is_some() && inst.state != State::Deleted {
        match ctx.client.credentials(&inst.id.to_string()).await {
            Ok(c) => Some(c),
            Err(e) => return (Value::Null, api_error("Reading the connection URI", e)),
        }
    } else {
        None
    };
    let mut v = summary(&inst);
    v.set("name", Value::string(name));
    let spec = &inst.spec;
    v.set("cpu", Value::string(&spec.resources.cpu));
    v.set("memory", Value::string(&spec.resources.memory));
    v.set("storage", Value::string(&spec.storage));
    v.set(
        "extensions",
        Value::List(spec.extension_names().map(Value::string).collect()),
    );
    v.set(
        "config",
        Value::Map(
            spec.config
                .iter()
                .map(|(k, val)| (k.clone(), Value::string(val)))
                .collect(),
        ),
    );
    crate::instance::model::set_connection(&mut v, inst.connection.as_ref(), creds.as_ref());
    (v, vec![])
}

pub async fn read_instances(ctx: &Ctx, config: &Value) -> (Value, Diagnostics) {
    let filter = config
        .get("state")
        .as_str()
        .and_then(State::parse)
        .map(State::as_str);
    let list = match ctx.client.list_instances(filter).await {
        Ok(l) => l,
        Err(e) => return (Value::Null, api_error("Listing instances", e)),
    };
    let mut items = list.items;
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let mut v = config.clone();
    v.set(
        "instances",
        Value::List(items.iter().map(summary).collect()),
    );
    (v, vec![])
}

pub async fn read_backups(ctx: &Ctx, config: &Value) -> (Value, Diagnostics) {
    let name = config.get("instance").as_str().unwrap_or_default();
    let list = match ctx.client.backups(name).await {
        Ok(l) => l,
        Err(ClientError::Api { status: 404, .. }) => {
            return (
                Value::Null,
                vec![diag::error_at(
                    attr_path("instance"),
                    "Instance not found",
                    format!("No instance {name:?} in the provider token's organisation."),
                )],
            )
        }
        Err(e) => return (Value::Null, api_error("Reading the backups", e)),
    };
    let stamp = |t: chrono::DateTime<chrono::Utc>| Value::string(domain::backup::stamp(t));
    let mut v = config.clone();
    v.set(
        "backups",
        Value::List(
            list.items
                .iter()
                .map(|b| {
                    Value::object([
                        ("id", Value::string(&b.id)),
                        ("type", Value::string(&b.kind)),
                        ("started_at", stamp(b.started_at)),
                        ("stopped_at", stamp(b.stopped_at)),
                        ("start_lsn", Value::string(b.start_lsn.to_string())),
                        ("stop_lsn", Value::string(b.stop_lsn.to_string())),
                        ("size_bytes", Value::Number(b.size_bytes as f64)),
                        ("repository_bytes", Value::Number(b.repository_bytes as f64)),
                        ("status", Value::string(&b.status)),
                    ])
                })
                .collect(),
        ),
    );
    v.set(
        "restorable_from",
        list.restorable_from.map_or(Value::Null, stamp),
    );
    v.set(
        "restorable_until",
        list.restorable_until.map_or(Value::Null, stamp),
    );
    (v, vec![])
}

pub async fn read_extensions(ctx: &Ctx, config: &Value) -> (Value, Diagnostics) {
    let data_plane = config.get("data_plane").as_str();
    let catalog = match ctx.client.extensions(data_plane).await {
        Ok(c) => c,
        Err(ClientError::Api { status: 422, .. }) => {
            return (
                Value::Null,
                vec![diag::error_at(
                    attr_path("data_plane"),
                    "Unknown data plane",
                    format!(
                        "No data plane {:?} has registered with the control plane.",
                        data_plane.unwrap_or_default()
                    ),
                )],
            )
        }
        Err(e) => return (Value::Null, api_error("Reading the extension catalog", e)),
    };
    let strings = |items: &[String]| Value::List(items.iter().map(Value::string).collect());
    let mut v = config.clone();
    v.set("data_plane", Value::string(&catalog.data_plane));
    v.set(
        "extensions",
        Value::List(
            catalog
                .items
                .iter()
                .map(|e| {
                    Value::object([
                        ("name", Value::string(&e.name)),
                        ("default_version", Value::string(&e.default_version)),
                        ("versions", strings(&e.versions)),
                        ("preload", Value::Bool(e.preload_library.is_some())),
                        (
                            "preload_library",
                            Value::opt_string(e.preload_library.clone()),
                        ),
                        ("restart_required", Value::Bool(e.restart_required)),
                        ("trusted", Value::Bool(e.trusted)),
                        ("requires", strings(&e.requires)),
                        ("package", Value::opt_string(e.package.clone())),
                        ("comment", Value::string(&e.comment)),
                    ])
                })
                .collect(),
        ),
    );
    (v, vec![])
}

/// The fields every view of an instance has.
fn summary(inst: &Instance) -> Value {
    let (host, port) = match &inst.connection {
        Some(c) => (Value::string(&c.host), Value::Number(f64::from(c.port))),
        None => (Value::Null, Value::Null),
    };
    Value::object([
        ("id", Value::string(inst.id.to_string())),
        ("name", Value::string(&inst.name)),
        ("org", Value::string(&inst.org)),
        ("owner", Value::string(&inst.owner)),
        ("state", Value::string(inst.state.as_str())),
        (
            "postgres_version",
            Value::string(&inst.spec.postgres_version),
        ),
        ("host", host),
        ("port", port),
    ])
}
