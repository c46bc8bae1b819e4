//! Drift: what a source declares versus what the data plane reports, field
//! by field, with both sides normalised (defaults applied, units canonical,
//! extension lists order-free) so equal meanings never show as drift.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::quantity::normalize_setting;
use crate::restart::effective_config;
use crate::spec::{Ensure, Extension, InstanceSpec, ObservedSpec};

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FieldDrift {
    /// e.g. `config.work_mem`, `extensions`, `running`
    pub path: String,
    pub declared: Option<String>,
    pub observed: Option<String>,
}

/// The fields in which `observed` differs from `declared`.
pub fn drift(declared: &InstanceSpec, observed: &ObservedSpec) -> Vec<FieldDrift> {
    let mut out = Vec::new();
    let mut push = |path: &str, d: Option<String>, o: Option<String>| {
        out.push(FieldDrift {
            path: path.to_owned(),
            declared: d,
            observed: o,
        })
    };
    let want_running = !declared.stopped;
    if want_running != observed.running {
        push(
            "running",
            Some(want_running.to_string()),
            Some(observed.running.to_string()),
        );
    }
    if !observed.running {
        // A stopped server reports nothing else.
        return out;
    }
    if !observed.postgres_version.is_empty()
        && observed.postgres_version != declared.postgres_version
    {
        push(
            "postgresVersion",
            Some(declared.postgres_version.clone()),
            Some(observed.postgres_version.clone()),
        );
    }
    if let Some((d, o)) = extension_drift(declared, observed) {
        push("extensions", Some(d), Some(o));
    }
    for (name, value) in effective_config(declared) {
        let seen = observed.config.get(&name);
        let same = seen.is_some_and(|s| {
            normalize_setting(&name, s) == normalize_setting(&name, &value)
                || (name == "shared_preload_libraries" && same_list(s, &value))
        });
        if !same {
            push(&format!("config.{name}"), Some(value), seen.cloned());
        }
    }
    if let Some(superuser) = observed.superuser_access {
        if superuser != declared.superuser_access {
            push(
                "superuserAccess",
                Some(declared.superuser_access.to_string()),
                Some(superuser.to_string()),
            );
        }
    }
    if let Some(archive) = &observed.archive {
        if archive.mode != "on" || !archive.overridden.is_empty() {
            let mut seen = vec![format!("archive_mode = {}", archive.mode)];
            seen.extend(archive.overridden.iter().cloned());
            push(
                "archiving",
                Some("archive_mode = on".to_owned()),
                Some(seen.join("; ")),
            );
        }
    }
    if let Some(roles) = &observed.roles {
        for (path, d, o) in crate::inside::role_drift(declared, roles) {
            push(&path, Some(d), Some(o));
        }
    }
    if let Some(databases) = &observed.databases {
        for (path, d, o) in crate::inside::database_drift(declared, databases) {
            push(&path, Some(d), Some(o));
        }
    }
    if let Some((d, o)) = member_drift(declared, observed) {
        push("replicas", Some(d), Some(o));
    }
    if !observed.pending_restart.is_empty() {
        push(
            "pendingRestart",
            Some(String::new()),
            Some(observed.pending_restart.join(",")),
        );
    }
    out
}

/// Declared members versus running ones: one primary and `replicas - 1`
/// running standbys. Only a data plane that reports members is compared.
fn member_drift(declared: &InstanceSpec, observed: &ObservedSpec) -> Option<(String, String)> {
    let members = observed.members.as_ref()?;
    let count = |role| {
        members
            .iter()
            .filter(|m| m.running && m.role == role)
            .count()
    };
    let (primaries, standbys) = (
        count(crate::spec::MemberRole::Primary),
        count(crate::spec::MemberRole::Standby),
    );
    let wanted = declared.replicas.saturating_sub(1) as usize;
    (primaries != 1 || standbys != wanted).then(|| {
        (
            format!("1 primary, {wanted} standby(s)"),
            format!("{primaries} primary, {standbys} standby(s) running"),
        )
    })
}

/// Declared extensions versus installed ones: a present one must be
/// installed (at its version when it names one and the data plane reports
/// versions), an absent one must not be. Extensions the spec does not name
/// (left installed when removed from it, or created as a dependency) are not
/// drift. Returns both sides, rendered, when they differ.
fn extension_drift(declared: &InstanceSpec, observed: &ObservedSpec) -> Option<(String, String)> {
    let installed = |name: &str| observed.extensions.iter().any(|e| e == name);
    let mut exts: Vec<&Extension> = declared.extensions.iter().collect();
    exts.sort();
    exts.dedup();
    let differs = exts.iter().any(|e| match e.ensure {
        Ensure::Absent => installed(&e.name),
        Ensure::Present => {
            !installed(&e.name)
                || e.version.as_ref().is_some_and(|v| {
                    observed
                        .extension_versions
                        .get(&e.name)
                        .is_some_and(|seen| seen != v)
                })
        }
    });
    if !differs {
        return None;
    }
    let want: BTreeSet<String> = exts.iter().map(|e| e.display()).collect();
    let have: BTreeSet<String> = exts
        .iter()
        .filter(|e| installed(&e.name))
        .map(
            |e| match (&e.version, observed.extension_versions.get(&e.name)) {
                (Some(_), Some(v)) => format!("{}={v}", e.name),
                _ => e.name.clone(),
            },
        )
        .collect();
    let join = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>().join(",");
    Some((join(want), join(have)))
}

fn same_list(a: &str, b: &str) -> bool {
    let set = |s: &str| -> BTreeSet<String> {
        s.split(',')
            .map(|p| p.trim().trim_matches('"').to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    };
    set(a) == set(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> InstanceSpec {
        let mut s = InstanceSpec::default();
        s.config.insert("work_mem".into(), "16MB".into());
        s.extensions = vec![
            Extension::new("pg_stat_statements"),
            Extension::new("hstore"),
        ];
        s
    }

    fn member(name: &str, role: crate::spec::MemberRole, running: bool) -> crate::ObservedMember {
        crate::ObservedMember {
            name: name.into(),
            role,
            running,
            timeline: Some(1),
            lsn: None,
            lag_bytes: None,
            state: None,
        }
    }

    #[test]
    fn members_drift_when_a_standby_is_missing_or_two_primaries_run() {
        use crate::spec::MemberRole::{Primary, Standby};
        let mut spec = declared();
        spec.replicas = 3;
        let mut obs = observed();
        obs.members = Some(vec![
            member("member-0", Primary, true),
            member("member-1", Standby, true),
            member("member-2", Standby, true),
        ]);
        assert!(!drift(&spec, &obs).iter().any(|d| d.path == "replicas"));
        for members in [
            vec![
                member("member-0", Primary, true),
                member("member-1", Standby, true),
                member("member-2", Standby, false),
            ],
            vec![
                member("member-0", Primary, true),
                member("member-1", Primary, true),
                member("member-2", Standby, true),
            ],
        ] {
            obs.members = Some(members);
            let found = drift(&spec, &obs);
            let d = found.iter().find(|d| d.path == "replicas").expect("drift");
            assert_eq!(d.declared.as_deref(), Some("1 primary, 2 standby(s)"));
        }
        // A data plane that reports no members is not compared.
        obs.members = None;
        assert!(!drift(&spec, &obs).iter().any(|d| d.path == "replicas"));
    }

    fn observed() -> ObservedSpec {
        ObservedSpec {
            members: None,
            postgres_version: "15".into(),
            extensions: vec!["hstore".into(), "pg_stat_statements".into()],
            config: [
                ("work_mem".to_owned(), "16384kB".to_owned()),
                (
                    "shared_preload_libraries".to_owned(),
                    "pg_stat_statements".to_owned(),
                ),
            ]
            .into(),
            running: true,
            pending_restart: vec![],
            superuser_access: Some(false),
            archive: None,
            roles: None,
            databases: None,
            extension_versions: [
                ("hstore".to_owned(), "1.8".to_owned()),
                ("pg_stat_statements".to_owned(), "1.10".to_owned()),
            ]
            .into(),
        }
    }

    #[test]
    fn extension_versions_and_absent_extensions_are_compared() {
        let mut d = declared();
        d.extensions[1].version = Some("1.8".into());
        let mut o = observed();
        o.extensions.push("citext".into());
        assert_eq!(
            drift(&d, &o),
            vec![],
            "an undeclared extension is not drift"
        );
        d.extensions[1].version = Some("1.7".into());
        let got = drift(&d, &o);
        assert_eq!(got[0].path, "extensions");
        assert_eq!(
            got[0].declared.as_deref(),
            Some("hstore=1.7,pg_stat_statements")
        );
        assert_eq!(
            got[0].observed.as_deref(),
            Some("hstore=1.8,pg_stat_statements")
        );
        o.extension_versions.clear();
        assert_eq!(drift(&d, &o), vec![], "versions not observed are not drift");
        d.extensions.push(crate::spec::Extension {
            ensure: Ensure::Absent,
            ..Extension::new("citext")
        });
        let got = drift(&d, &o);
        assert_eq!(
            got[0].observed.as_deref(),
            Some("citext,hstore,pg_stat_statements")
        );
    }

    #[test]
    fn equal_meanings_are_not_drift() {
        assert_eq!(drift(&declared(), &observed()), vec![]);
    }

    #[test]
    fn out_of_band_changes_are_drift_field_by_field() {
        let mut o = observed();
        o.config.insert("work_mem".into(), "64MB".into());
        o.extensions.pop();
        let d = drift(&declared(), &o);
        let paths: Vec<&str> = d.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["extensions", "config.work_mem"]);
        assert_eq!(d[1].declared.as_deref(), Some("16MB"));
        assert_eq!(d[1].observed.as_deref(), Some("64MB"));
    }

    #[test]
    fn a_stopped_server_is_drift_when_it_should_run() {
        let mut o = observed();
        o.running = false;
        let d = drift(&declared(), &o);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "running");
    }
}
