//! Field-level differences between two specs, after normalisation on both
//! sides, so defaulted fields, unit spellings and extension order never show
//! as changes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::quantity::{normalize_setting, parse_bytes, parse_cpu};
use crate::spec::InstanceSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldChange {
    /// e.g. `config.work_mem`, `extensions`
    pub path: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The changes that turn `old` into `new`; empty when they mean the same.
pub fn diff_specs(old: &InstanceSpec, new: &InstanceSpec) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut field = |path: &str, a: String, b: String| {
        if a != b {
            out.push(FieldChange {
                path: path.to_owned(),
                from: Some(a),
                to: Some(b),
            });
        }
    };
    field(
        "postgresVersion",
        old.postgres_version.clone(),
        new.postgres_version.clone(),
    );
    field(
        "replicas",
        old.replicas.to_string(),
        new.replicas.to_string(),
    );
    field(
        "synchronous",
        old.synchronous.to_string(),
        new.synchronous.to_string(),
    );
    let same_cpu = parse_cpu(&old.resources.cpu).ok() == parse_cpu(&new.resources.cpu).ok();
    if !same_cpu {
        field(
            "resources.cpu",
            old.resources.cpu.clone(),
            new.resources.cpu.clone(),
        );
    }
    if parse_bytes(&old.resources.memory).ok() != parse_bytes(&new.resources.memory).ok() {
        field(
            "resources.memory",
            old.resources.memory.clone(),
            new.resources.memory.clone(),
        );
    }
    if parse_bytes(&old.storage).ok() != parse_bytes(&new.storage).ok() {
        field("storage", old.storage.clone(), new.storage.clone());
    }
    field("stopped", old.stopped.to_string(), new.stopped.to_string());
    field(
        "superuserAccess",
        old.superuser_access.to_string(),
        new.superuser_access.to_string(),
    );
    field(
        "backup.schedule",
        old.backup.schedule.trim().to_owned(),
        new.backup.schedule.trim().to_owned(),
    );
    field(
        "backup.retention",
        old.backup.retention.spec_value(),
        new.backup.retention.spec_value(),
    );
    let restore = |s: &InstanceSpec| match &s.restore {
        None => "none".to_owned(),
        Some(r) => format!(
            "{} at {}",
            r.from,
            r.at.clone()
                .or_else(|| r.lsn.clone())
                .unwrap_or_else(|| "latest".to_owned())
        ),
    };
    field("restore", restore(old), restore(new));

    let a: BTreeSet<String> = old.extensions.iter().map(|e| e.display()).collect();
    let b: BTreeSet<String> = new.extensions.iter().map(|e| e.display()).collect();
    if a != b {
        out.push(FieldChange {
            path: "extensions".to_owned(),
            from: Some(a.into_iter().collect::<Vec<_>>().join(",")),
            to: Some(b.into_iter().collect::<Vec<_>>().join(",")),
        });
    }
    out.extend(diff_inside(old, new));
    out.extend(diff_config(&old.config, &new.config));
    out
}

/// Database- and role-level changes (`databases.NAME`, `roles.NAME`),
/// each shown as its attributes (or `absent`); `None` where the other side
/// does not declare it.
fn diff_inside(old: &InstanceSpec, new: &InstanceSpec) -> Vec<FieldChange> {
    fn changes<T>(
        kind: &str,
        old: &[T],
        new: &[T],
        name: impl Fn(&T) -> &str,
        show: impl Fn(&T) -> String,
    ) -> Vec<FieldChange> {
        let side = |items: &[T]| -> BTreeMap<String, String> {
            items
                .iter()
                .map(|i| (name(i).to_owned(), show(i)))
                .collect()
        };
        let (a, b) = (side(old), side(new));
        let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        names
            .into_iter()
            .filter(|n| a.get(*n) != b.get(*n))
            .map(|n| FieldChange {
                path: format!("{kind}.{n}"),
                from: a.get(n).cloned(),
                to: b.get(n).cloned(),
            })
            .collect()
    }
    let mut out = changes(
        "roles",
        &old.roles,
        &new.roles,
        |r| &r.name,
        crate::inside::Role::display,
    );
    out.extend(changes(
        "databases",
        &old.databases,
        &new.databases,
        |d| &d.name,
        crate::inside::Database::display,
    ));
    out
}

/// Parameter-level changes, values compared in canonical form.
pub fn diff_config(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<FieldChange> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let a = old.get(name);
            let b = new.get(name);
            let same = match (a, b) {
                (Some(a), Some(b)) => normalize_setting(name, a) == normalize_setting(name, b),
                (None, None) => true,
                _ => false,
            };
            (!same).then(|| FieldChange {
                path: format!("config.{name}"),
                from: a.cloned(),
                to: b.cloned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Extension;

    #[test]
    fn equal_meaning_is_no_change() {
        let mut a = InstanceSpec::default();
        a.config.insert("work_mem".into(), "16MB".into());
        a.extensions = vec![Extension::new("b"), Extension::new("a")];
        a.storage = "10Gi".into();
        let mut b = a.clone();
        b.config.insert("work_mem".into(), "16384kB".into());
        b.extensions.reverse();
        b.storage = "10240Mi".into();
        assert_eq!(diff_specs(&a, &b), vec![]);
    }

    #[test]
    fn synchronous_changes_are_changes() {
        let a = InstanceSpec::default();
        let b = InstanceSpec {
            synchronous: crate::Synchronous::Standbys(1),
            ..a.clone()
        };
        let c = diff_specs(&a, &b);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "synchronous");
        assert_eq!(
            (c[0].from.as_deref(), c[0].to.as_deref()),
            (Some("off"), Some("on"))
        );
    }

    #[test]
    fn backup_policy_changes_are_changes() {
        let a = InstanceSpec::default();
        let mut b = a.clone();
        b.backup.retention = crate::backup::Retention::Count(3);
        b.backup.schedule = "@daily".into();
        let paths: Vec<String> = diff_specs(&a, &b).into_iter().map(|c| c.path).collect();
        assert_eq!(paths, ["backup.schedule", "backup.retention"]);
        let c = diff_specs(&a, &b);
        assert_eq!(c[1].from.as_deref(), Some("7d"));
        assert_eq!(c[1].to.as_deref(), Some("3"));
    }

    #[test]
    fn databases_and_roles_are_changes_by_name() {
        use crate::inside::{Database, Role};
        let a = InstanceSpec {
            roles: vec![Role::new("app")],
            ..Default::default()
        };
        let mut b = a.clone();
        b.roles[0].connection_limit = 5;
        b.databases = vec![Database::new("shop", "app")];
        let d = diff_specs(&a, &b);
        let got: Vec<(&str, Option<&str>, Option<&str>)> = d
            .iter()
            .map(|c| (c.path.as_str(), c.from.as_deref(), c.to.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "roles.app",
                    Some("login,inherit"),
                    Some("login,inherit,connectionLimit=5")
                ),
                ("databases.shop", None, Some("owner=app")),
            ]
        );
        assert!(!crate::predict_restart(&a, &b).required(), "reload only");
        let mut c = b.clone();
        c.roles[0].member_of = vec!["x".into(), "x".into()];
        let mut e = b.clone();
        e.roles[0].member_of = vec!["x".into()];
        assert_eq!(diff_specs(&c, &e), vec![]);
    }

    #[test]
    fn changes_are_listed_by_field() {
        let a = InstanceSpec::default();
        let mut b = a.clone();
        b.config.insert("work_mem".into(), "16MB".into());
        b.extensions.push(Extension::new("hstore"));
        let d = diff_specs(&a, &b);
        let paths: Vec<&str> = d.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["extensions", "config.work_mem"]);
        assert_eq!(d[1].from, None);
        assert_eq!(d[1].to.as_deref(), Some("16MB"));
    }
}
