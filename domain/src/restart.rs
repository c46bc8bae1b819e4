//! Whether a spec change needs a Postgres restart, predicted before anything
//! is sent to a data plane. The agent confirms it with
//! `pg_settings.pending_restart` and reports when the prediction was wrong.

use std::collections::{BTreeMap, BTreeSet};

use crate::quantity::normalize_setting;
use crate::settings;
use crate::spec::InstanceSpec;

/// The preload library of an extension, from [`crate::extension::REVIEWED`].
pub fn preload_library(extension: &str) -> Option<&'static str> {
    crate::extension::reviewed(extension).map(|r| r.library)
}

/// The configuration Postgres actually gets for a spec: the user's parameters
/// plus the preload libraries its extensions need, merged into
/// `shared_preload_libraries` (the extensions' libraries in their reviewed
/// order, then the others sorted, de-duplicated), and the settings those
/// extensions need unless the spec sets them; with `synchronous` on, the
/// standbys that confirm commits.
pub fn effective_config(spec: &InstanceSpec) -> BTreeMap<String, String> {
    let mut config: BTreeMap<String, String> = spec
        .config
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let mut others: BTreeSet<String> = config
        .get("shared_preload_libraries")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().trim_matches('"').to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut libs: Vec<String> = Vec::new();
    for reviewed in crate::extension::preload_libraries(spec) {
        others.remove(reviewed.library);
        libs.push(reviewed.library.to_owned());
        for (name, value) in reviewed.settings {
            config
                .entry((*name).to_owned())
                .or_insert_with(|| (*value).to_owned());
        }
    }
    libs.extend(others);
    if !libs.is_empty() {
        config.insert("shared_preload_libraries".to_owned(), libs.join(","));
    }
    if let Some(names) = spec.synchronous.standby_names() {
        config.insert(MANAGED[0].to_owned(), names);
    }
    config
}

/// Reserved parameters that [`effective_config`] sets from fields of the
/// spec other than `config`.
pub const MANAGED: &[&str] = &["synchronous_standby_names"];

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestartPrediction {
    /// Why a restart is needed; empty when none is.
    pub reasons: Vec<String>,
}

impl RestartPrediction {
    pub fn required(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Predicts whether going from `old` to `new` needs a restart: a changed
/// `postmaster`-context parameter (including `shared_preload_libraries`, which
/// new preload extensions change), or changed resources (which restart the
/// pod on Kubernetes).
pub fn predict_restart(old: &InstanceSpec, new: &InstanceSpec) -> RestartPrediction {
    let before = effective_config(old);
    let after = effective_config(new);
    let mut reasons = Vec::new();
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for name in names {
        if !settings::needs_restart(name) {
            continue;
        }
        let a = before.get(name).map(|v| normalize_setting(name, v));
        let b = after.get(name).map(|v| normalize_setting(name, v));
        if a != b {
            reasons.push(format!(
                "{name} changed ({} → {}) and only takes effect after a restart",
                a.as_deref().unwrap_or("default"),
                b.as_deref().unwrap_or("default")
            ));
        }
    }
    if old.resources != new.resources {
        reasons.push("resources changed (restarts the pod on Kubernetes)".to_owned());
    }
    RestartPrediction { reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Extension;

    fn spec(config: &[(&str, &str)], exts: &[&str]) -> InstanceSpec {
        InstanceSpec {
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            extensions: exts.iter().map(|e| Extension::new(*e)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn reload_only_parameters_do_not_restart() {
        let p = predict_restart(&spec(&[], &[]), &spec(&[("work_mem", "16MB")], &["hstore"]));
        assert!(!p.required(), "{p:?}");
    }

    #[test]
    fn postmaster_parameters_restart() {
        let p = predict_restart(&spec(&[], &[]), &spec(&[("max_connections", "150")], &[]));
        assert!(p.required());
        assert!(p.reasons[0].contains("max_connections"), "{p:?}");
    }

    #[test]
    fn preload_extensions_restart_via_shared_preload_libraries() {
        let p = predict_restart(
            &spec(&[], &["hstore"]),
            &spec(&[], &["hstore", "pg_stat_statements"]),
        );
        assert!(p.reasons[0].contains("shared_preload_libraries"), "{p:?}");
        let same = predict_restart(
            &spec(&[("shared_preload_libraries", "pg_stat_statements")], &[]),
            &spec(&[], &["pg_stat_statements"]),
        );
        assert!(!same.required(), "{same:?}");
    }

    #[test]
    fn pg_cron_brings_the_settings_it_needs_unless_the_spec_sets_them() {
        let config = effective_config(&spec(
            &[("shared_preload_libraries", "auto_explain")],
            &["pg_cron", "pgaudit"],
        ));
        assert_eq!(
            config["shared_preload_libraries"],
            "pg_cron,pgaudit,auto_explain"
        );
        assert_eq!(config["cron.database_name"], "postgres");
        let own = effective_config(&spec(&[("cron.database_name", "app")], &["pg_cron"]));
        assert_eq!(own["cron.database_name"], "app");
        let p = predict_restart(&spec(&[], &["hstore"]), &spec(&[], &["hstore", "pg_cron"]));
        assert!(
            p.reasons
                .iter()
                .any(|r| r.contains("shared_preload_libraries")),
            "{p:?}"
        );
    }

    #[test]
    fn equal_values_in_other_units_do_not_restart() {
        let p = predict_restart(
            &spec(&[("shared_buffers", "128MB")], &[]),
            &spec(&[("shared_buffers", "131072kB")], &[]),
        );
        assert!(!p.required(), "{p:?}");
    }
}
