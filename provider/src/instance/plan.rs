//! Validation and planning for `pgplane_instance`.

use domain::name::check_dns1123_label;
use domain::{predict_restart, validate_spec_with, ValidateOptions};

use super::model::{spec_from, COMPUTED_ONLY, DEFAULTS};
use crate::diag::{self, attr_path, Diagnostics, Step};
use crate::tfplugin::tfplugin6 as pb;
use crate::value::Value;

/// Checks a configuration: every known value, each problem at its
/// attribute path. Unknown values are checked later, when they are known.
pub fn validate(config: &Value) -> Diagnostics {
    let mut diags = Vec::new();
    if let Some(name) = config.get("name").as_str() {
        if let Err(e) = check_dns1123_label(name) {
            diags.push(diag::error_at(
                attr_path("name"),
                "Invalid instance name",
                e.to_string(),
            ));
        }
    }
    // Validate a spec made of the known parts; unknown ones take defaults
    // and their errors are dropped.
    let mut known = config.clone();
    let mut unknown_paths: Vec<String> = Vec::new();
    for (attr, field) in [
        ("postgres_version", "postgresVersion"),
        ("cpu", "resources.cpu"),
        ("memory", "resources.memory"),
        ("storage", "storage"),
        ("replicas", "replicas"),
        ("synchronous", "synchronous"),
        ("extensions", "extensions"),
        ("config", "config"),
        ("superuser_access", "superuserAccess"),
        ("backup_schedule", "backup.schedule"),
        ("backup_retention", "backup.retention"),
        ("restore_from", "restore"),
        ("restore_at", "restore"),
        ("restore_lsn", "restore"),
    ] {
        if config.get(attr).is_unknown() {
            known.set(attr, Value::Null);
            unknown_paths.push(format!("spec.{field}"));
        }
    }
    if let Value::Map(m) = config.get("config") {
        let known_params = m
            .iter()
            .filter(|(k, v)| {
                let ok = !v.is_unknown();
                if !ok {
                    unknown_paths.push(format!("spec.config.{k}"));
                }
                ok
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        known.set("config", Value::Map(known_params));
    }
    if let Value::List(items) = config.get("extensions") {
        known.set(
            "extensions",
            Value::List(items.iter().filter(|v| !v.is_unknown()).cloned().collect()),
        );
    }
    if let Some(spec) = spec_from(&known, None) {
        let options = ValidateOptions {
            unknown: unknown_paths.clone(),
        };
        if let Err(errs) = validate_spec_with(&spec, "spec", &options) {
            for e in errs.0 {
                if unknown_paths.iter().any(|p| e.path.starts_with(p.as_str())) {
                    continue;
                }
                let at = diag::spec_field_path(&e.path);
                let summary = match at.steps.is_empty() {
                    true => format!("Invalid instance spec: {}", e.path),
                    false => "Invalid instance spec".to_owned(),
                };
                diags.push(diag::error_at(at, summary, e.message));
            }
        }
    }
    if let Some(text) = config.get("synchronous").as_str() {
        if let Err(e) = domain::Synchronous::parse(text) {
            diags.push(diag::error_at(
                attr_path("synchronous"),
                "Invalid synchronous replication",
                e,
            ));
        }
    }
    if let Some(r) = config.get("backup_retention").as_str() {
        if let Err(e) = domain::Retention::parse(r) {
            diags.push(diag::error_at(
                attr_path("backup_retention"),
                "Invalid backup retention",
                e,
            ));
        }
    }
    if let Some(at) = config.get("restore_at").as_str() {
        if let Err(e) = domain::backup::parse_time(at) {
            diags.push(diag::error_at(
                attr_path("restore_at"),
                "Invalid restore point",
                e,
            ));
        }
    }
    if let Some(lsn) = config.get("restore_lsn").as_str() {
        if let Err(e) = domain::Lsn::parse(lsn) {
            diags.push(diag::error_at(
                attr_path("restore_lsn"),
                "Invalid restore point",
                e,
            ));
        }
    }
    let from = config.get("restore_from");
    for attr in ["restore_at", "restore_lsn"] {
        if !config.get(attr).is_null() && !config.get(attr).is_unknown() && from.is_null() {
            diags.push(diag::error_at(
                attr_path(attr),
                "Restore point without a source",
                format!("{attr} says where a restore stops; set restore_from to the instance whose backups to restore"),
            ));
        }
    }
    for op in ["create", "update", "delete"] {
        if let Some(s) = config.get("timeouts").get(op).as_str() {
            if let Err(e) = domain::duration::parse_positive(s) {
                diags.push(diag::error_at(
                    diag::path(&[Step::Attr("timeouts".into()), Step::Attr(op.into())]),
                    "Invalid timeout",
                    e.to_string(),
                ));
            }
        }
    }
    diags
}

pub struct Plan {
    pub planned: Value,
    pub requires_replace: Vec<pb::AttributePath>,
    pub private: Vec<u8>,
    pub diagnostics: Diagnostics,
}

/// Plans a change by Terraform's rules: known values are exactly the
/// configuration's; computed values are unknown only where they can change;
/// `name` and `postgres_version` force replacement. `config` tells an unset
/// `stopped` (planned `false`) from the prior value Terraform proposes.
pub fn plan(prior: &Value, proposed: Value, config: &Value) -> Plan {
    let mut out = Plan {
        planned: Value::Null,
        requires_replace: Vec::new(),
        private: Vec::new(),
        diagnostics: Vec::new(),
    };
    if proposed.is_null() {
        return out; // destroy
    }
    let mut planned = proposed;
    planned.set(
        "replicas",
        match config.get("replicas") {
            Value::Null => Value::Number(1.0),
            v => v.clone(),
        },
    );
    planned.set(
        "stopped",
        match config.get("stopped") {
            Value::Unknown => Value::Unknown,
            v => Value::Bool(*v == Value::Bool(true)),
        },
    );
    if prior.is_null() {
        for (name, default) in DEFAULTS {
            if planned.get(name).is_null() {
                planned.set(name, Value::string(default));
            }
        }
        for name in COMPUTED_ONLY {
            planned.set(name, Value::Unknown);
        }
        planned.set("owner", Value::string(super::apply::OWNER));
        out.planned = planned;
        return out;
    }
    if planned.get("stopped") != prior.get("stopped") {
        // Stopping or starting: the state it ends in is Stopped or Up.
        planned.set("state", Value::Unknown);
    }

    for name in ["name", "postgres_version"]
        .into_iter()
        .chain(super::model::RESTORE_ATTRIBUTES)
    {
        if planned.get(name) != prior.get(name) {
            out.requires_replace.push(attr_path(name));
        }
    }
    let managed = [
        "postgres_version",
        "extensions",
        "config",
        "cpu",
        "memory",
        "storage",
        "replicas",
        "synchronous",
        "superuser_access",
        "backup_schedule",
        "backup_retention",
    ];
    let prior_replicas = match prior.get("replicas") {
        Value::Null => Value::Number(1.0),
        v => v.clone(),
    };
    if planned.get("replicas") != &prior_replicas {
        // The members the multi-host URIs list change.
        for name in ["read_write_uri", "read_only_uri"] {
            planned.set(name, Value::Unknown);
        }
    }
    let spec_changes = managed.iter().any(|n| {
        let prior_value = match (*n, prior.get(n)) {
            // A state written before the attribute existed: one server.
            ("replicas", Value::Null) => &Value::Number(1.0),
            (_, v) => v,
        };
        !same_value(planned.get(n), prior_value)
    });
    if spec_changes && out.requires_replace.is_empty() {
        // The update waits until the instance is Up again.
        if prior.get("state").as_str() != Some("Up") {
            planned.set("state", Value::Unknown);
        }
        if let (Some(old), Some(new)) = (spec_from(prior, None), spec_from(&planned, None)) {
            let restart = predict_restart(&old, &new);
            if restart.required() {
                out.diagnostics.push(diag::warning(
                    format!(
                        "pgplane_instance {:?}: this update restarts Postgres",
                        planned.get("name").as_str().unwrap_or_default()
                    ),
                    restart.reasons.join("\n"),
                ));
            }
            out.private = serde_json::json!({ "restart_reasons": restart.reasons })
                .to_string()
                .into_bytes();
        }
    }
    out.planned = planned;
    out
}

/// Equal, treating a set's order as irrelevant.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().all(|i| y.contains(i)),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: Vec<(&'static str, Value)>) -> Value {
        crate::schema::instance_resource().conform(Value::object(pairs))
    }

    #[test]
    fn validation_names_the_attribute() {
        let diags = validate(&config(vec![
            ("name", Value::string("Bad_Name")),
            ("extensions", Value::List(vec![Value::string("Not Valid")])),
            (
                "config",
                Value::Map([("port".to_owned(), Value::string("5433"))].into()),
            ),
            ("cpu", Value::string("lots")),
        ]));
        let paths: Vec<_> = diags.iter().map(|d| d.attribute.clone().unwrap()).collect();
        assert!(paths.contains(&attr_path("name")), "{diags:?}");
        assert!(paths.contains(&attr_path("extensions")), "{diags:?}");
        assert!(paths.contains(&attr_path("cpu")), "{diags:?}");
        assert!(paths.contains(&diag::path(&[
            Step::Attr("config".into()),
            Step::Key("port".into())
        ])));
    }

    #[test]
    fn every_validation_error_has_a_path_and_names_it() {
        let bad = config(vec![
            ("name", Value::string("Bad_Name")),
            ("postgres_version", Value::string("9")),
            ("cpu", Value::string("lots")),
            ("memory", Value::string("1XB")),
            ("storage", Value::string("big")),
            ("extensions", Value::List(vec![Value::string("Not Valid")])),
            (
                "config",
                Value::Map(
                    [
                        ("max_connections".to_owned(), Value::string("lots")),
                        ("shared_buffers".to_owned(), Value::string("on")),
                        ("port".to_owned(), Value::string("5433")),
                    ]
                    .into(),
                ),
            ),
            ("backup_schedule", Value::string("whenever")),
            ("backup_retention", Value::string("forever")),
            ("restore_at", Value::string("yesterday")),
            ("restore_lsn", Value::string("x")),
            (
                "timeouts",
                Value::object([("create", Value::string("5 minutes"))]),
            ),
        ]);
        let diags = diag::named(validate(&bad));
        assert!(diags.len() >= 12, "{diags:?}");
        for d in &diags {
            let at = d.attribute.as_ref().expect("an attribute path");
            let name = diag::display(at);
            assert!(!name.is_empty(), "{d:?}");
            assert!(d.summary.contains(&name), "{d:?}");
        }
        let max = diags
            .iter()
            .find(|d| d.summary.contains("config.max_connections"))
            .expect("max_connections named");
        assert!(max.detail.contains("integer"), "{max:?}");
    }

    #[test]
    fn unknown_values_are_not_judged() {
        let diags = validate(&config(vec![
            ("name", Value::Unknown),
            ("config", Value::Unknown),
            ("cpu", Value::Unknown),
        ]));
        assert!(diags.is_empty(), "{diags:?}");
        // Nor is a rule relating a known value to an unknown one.
        let big_buffers = |memory: Value| {
            validate(&config(vec![
                ("name", Value::string("a")),
                ("memory", memory),
                (
                    "config",
                    Value::Map([("shared_buffers".to_owned(), Value::string("2GB"))].into()),
                ),
            ]))
        };
        assert!(big_buffers(Value::Unknown).is_empty());
        assert_eq!(big_buffers(Value::string("1Gi")).len(), 1);
    }

    #[test]
    fn create_plans_defaults_and_unknown_computed() {
        let c = config(vec![("name", Value::string("a"))]);
        let p = plan(&Value::Null, c.clone(), &c);
        assert_eq!(p.planned.get("postgres_version"), &Value::string("15"));
        assert_eq!(p.planned.get("memory"), &Value::string("1Gi"));
        assert!(p.planned.get("id").is_unknown());
        assert!(p.planned.get("extensions").is_null());
        assert_eq!(p.planned.get("stopped"), &Value::Bool(false));
        assert_eq!(p.planned.get("owner"), &Value::string("terraform"));
    }

    #[test]
    fn update_keeps_computed_values_and_warns_about_restarts() {
        let mut prior = config(vec![("name", Value::string("a"))]);
        for (k, v) in [
            ("postgres_version", "15"),
            ("cpu", "1"),
            ("memory", "1Gi"),
            ("storage", "10Gi"),
            ("id", "x"),
            ("state", "Up"),
        ] {
            prior.set(k, Value::string(v));
        }
        prior.set("stopped", Value::Bool(false));
        let mut proposed = prior.clone();
        proposed.set(
            "config",
            Value::Map([("max_connections".to_owned(), Value::string("150"))].into()),
        );
        let p = plan(&prior, proposed.clone(), &proposed);
        assert!(p.requires_replace.is_empty());
        assert_eq!(p.planned.get("state"), &Value::string("Up"));
        assert_eq!(p.planned.get("id"), &Value::string("x"));
        assert_eq!(p.diagnostics.len(), 1, "{:?}", p.diagnostics);

        let mut renamed = prior.clone();
        renamed.set("name", Value::string("b"));
        assert_eq!(
            plan(&prior, renamed.clone(), &renamed).requires_replace,
            vec![attr_path("name")]
        );
    }

    #[test]
    fn stopped_is_planned_in_place_from_the_configuration() {
        let mut prior = config(vec![("name", Value::string("a"))]);
        prior.set("state", Value::string("Stopped"));
        prior.set("stopped", Value::Bool(true));
        // Unset in the configuration: Terraform proposes the prior `true`;
        // the plan is to start it.
        let unset = config(vec![("name", Value::string("a"))]);
        let p = plan(&prior, prior.clone(), &unset);
        assert_eq!(p.planned.get("stopped"), &Value::Bool(false));
        assert!(p.planned.get("state").is_unknown());
        assert!(p.requires_replace.is_empty());
        let stay = config(vec![
            ("name", Value::string("a")),
            ("stopped", Value::Bool(true)),
        ]);
        let p = plan(&prior, prior.clone(), &stay);
        assert_eq!(p.planned.get("state"), &Value::string("Stopped"));
    }
}
