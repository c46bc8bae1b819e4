//! Whether a spec change needs a Postgres restart, predicted before anything
//! is sent to a data plane. The agent confirms it with
//! `pg_settings.pending_restart` and reports when the prediction was wrong.

use std::collections::{BTreeMap, BTreeSet};

use crate::quantity::normalize_setting;
use crate::settings;
use crate::spec::InstanceSpec;

/// Extensions whose library must be in `shared_preload_libraries`.
pub const PRELOAD_EXTENSIONS: &[(&str, &str)] = &[
    ("pg_stat_statements", "pg_stat_statements"),
    ("pg_cron", "pg_cron"),
    ("pgaudit", "pgaudit"),
    ("timescaledb", "timescaledb"),
    ("pg_squeeze", "pg_squeeze"),
];

pub fn preload_library(extension: &str) -> Option<&'static str> {
    PRELOAD_EXTENSIONS
        .iter()
        .find(|(e, _)| *e == extension)
        .map(|(_, lib)| *lib)
}

/// The configuration Postgres actually gets for a spec: the user's parameters
/// plus the preload libraries its extensions need, merged into
/// `shared_preload_libraries` (sorted, de-duplicated).
pub fn effective_config(spec: &InstanceSpec) -> BTreeMap<String, String> {
    let mut config: BTreeMap<String, String> = spec
        .config
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let mut libs: BTreeSet<String> = config
        .get("shared_preload_libraries")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().trim_matches('"').to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    libs.extend(
        spec.extension_names()
            .filter_map(preload_library)
            .map(str::to_owned),
    );
    if !libs.is_empty() {
        config.insert(
            "shared_preload_libraries".to_owned(),
            libs.into_iter().collect::<Vec<_>>().join(","),
        );
    }
    config
}

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
            extensions: exts
                .iter()
                .map(|e| Extension {
                    name: e.to_string(),
                })
                .collect(),
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
    fn equal_values_in_other_units_do_not_restart() {
        let p = predict_restart(
            &spec(&[("shared_buffers", "128MB")], &[]),
            &spec(&[("shared_buffers", "131072kB")], &[]),
        );
        assert!(!p.required(), "{p:?}");
    }
}
