//! The configuration as a whole: parameter combinations PostgreSQL 15
//! refuses to start with (each tried on a real server), and what the
//! instance's data plane and resources cannot give. A parameter the spec
//! does not set has its built-in default (`pg_settings.boot_val`), which is
//! also what the data planes' `initdb` leaves for these parameters.
//!
//! Rules, each reported at the parameter that breaks it:
//! - `wal_level = minimal` is refused: every instance's WAL is archived;
//! - with standbys (`replicas` > 1): enough `max_wal_senders` and
//!   `max_replication_slots` for them, and `hot_standby` on;
//! - `superuser_reserved_connections` < `max_connections`;
//! - `max_connections + autovacuum_max_workers + 1 + max_worker_processes +
//!   max_wal_senders` ≤ 262143 (`MAX_BACKENDS`);
//! - `min_wal_size` and `max_wal_size` ≥ twice `wal_segment_size`;
//! - at most one `recovery_target*` is set;
//! - `huge_pages = on` and `ssl = on` are refused (no huge pages reserved,
//!   no server certificate: the server would not start);
//! - `shared_buffers` ≤ [`SHARED_BUFFERS_MAX_PERCENT_OF_MEMORY`] of
//!   `resources.memory`;
//! - `shared_preload_libraries` names known preloadable libraries only.

use std::collections::BTreeMap;

use super::{ValidateOptions, ValidationErrors};
use crate::quantity::parse_bytes;
use crate::settings::value::{format_amount, to_bytes};
use crate::settings::{self, closest, SettingValue};
use crate::spec::InstanceSpec;

/// The most of `resources.memory` that `shared_buffers` may take, in percent.
/// Shared buffers are allocated whole at start and count against the
/// instance's memory limit (a Kubernetes pod is killed when it goes over);
/// the rest is for connections, `work_mem`, maintenance and the agent.
pub const SHARED_BUFFERS_MAX_PERCENT_OF_MEMORY: u64 = 80;

/// `MAX_BACKENDS` in PostgreSQL 15 (`postmaster.h`).
const MAX_BACKENDS: f64 = 262_143.0;

const RECOVERY_TARGETS: &[&str] = &[
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
];

pub(super) fn check(
    spec: &InstanceSpec,
    prefix: &str,
    options: &ValidateOptions,
    errs: &mut ValidationErrors,
) {
    let config = Config::new(spec, prefix, options);
    check_wal_level_minimal(&config, errs);
    check_replication(&config, spec.replicas, errs);
    check_connections(&config, errs);
    check_wal_sizes(&config, errs);
    check_recovery_targets(&config, errs);
    check_unsupported(&config, errs);
    check_shared_buffers(&config, spec, prefix, options, errs);
}

/// The parameters of a spec, by lower-case name.
struct Config<'a> {
    prefix: &'a str,
    options: &'a ValidateOptions,
    set: BTreeMap<String, (&'a str, &'a str)>,
}

impl<'a> Config<'a> {
    fn new(spec: &'a InstanceSpec, prefix: &'a str, options: &'a ValidateOptions) -> Self {
        let set = spec
            .config
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (k.as_str(), v.as_str())))
            .collect();
        Config {
            prefix,
            options,
            set,
        }
    }

    /// Where an error about `name` goes: the key as the spec writes it.
    fn path(&self, name: &str) -> String {
        let key = self.set.get(name).map_or(name, |(k, _)| *k);
        format!("{}.config.{key}", self.prefix)
    }

    fn is_set(&self, name: &str) -> bool {
        self.set.contains_key(name)
    }

    /// The value in effect: the spec's or the built-in default. `None` when
    /// it is not known yet, or is invalid (reported on its own).
    fn value(&self, name: &str) -> Option<SettingValue> {
        if self.options.is_unknown(&self.path(name)) {
            return None;
        }
        let setting = settings::lookup(name)?;
        match self.set.get(name) {
            Some((_, v)) => settings::parse_value(setting, v).ok(),
            None => setting.default_value(),
        }
    }

    fn number(&self, name: &str) -> Option<f64> {
        self.value(name)?.as_f64()
    }

    fn word(&self, name: &str) -> Option<String> {
        match self.value(name)? {
            SettingValue::Enum(v) => Some(v.to_owned()),
            SettingValue::Bool(b) => Some(if b { "on" } else { "off" }.to_owned()),
            SettingValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value in effect as a message shows it: `10 (the default)`.
    fn shown(&self, name: &str) -> String {
        let shown = match (self.value(name), settings::lookup(name)) {
            (Some(SettingValue::Integer(n)), Some(s)) => format_amount(s, n as f64),
            (Some(SettingValue::Real(r)), Some(s)) => format_amount(s, r),
            (Some(SettingValue::Integer(n)), None) => n.to_string(),
            (Some(SettingValue::Real(r)), None) => r.to_string(),
            (Some(SettingValue::Enum(v)), _) => v.to_owned(),
            (Some(SettingValue::Bool(b)), _) => if b { "on" } else { "off" }.to_owned(),
            (Some(SettingValue::String(v)), _) => format!("{v:?}"),
            (None, _) => "?".to_owned(),
        };
        let default = if self.is_set(name) {
            ""
        } else {
            " (the default)"
        };
        format!("{shown}{default}")
    }
}

fn check_wal_level_minimal(c: &Config, errs: &mut ValidationErrors) {
    if c.word("wal_level").as_deref() == Some("minimal") {
        errs.push(
            c.path("wal_level"),
            "wal_level = minimal cannot be archived, and every instance's WAL is archived for its backups: use replica (the default) or logical",
        );
    }
}
/// With standbys, the primary needs a WAL sender for each of them plus two
/// for building a new one (`pg_basebackup` streams its WAL), a replication
/// slot for each, and the standbys must serve reads.
fn check_replication(c: &Config, replicas: u32, errs: &mut ValidationErrors) {
    if replicas <= 1 {
        return;
    }
    let standbys = f64::from(replicas - 1);
    for (name, needed, why) in [
        (
            "max_wal_senders",
            standbys + 2.0,
            "one per standby and two to build a new one",
        ),
        ("max_replication_slots", standbys, "one per standby"),
    ] {
        if c.number(name).is_some_and(|n| n < needed) {
            errs.push(
                c.path(name),
                format!(
                    "must be at least {needed} with replicas = {replicas} ({why}); is {}",
                    c.shown(name)
                ),
            );
        }
    }
    if c.word("hot_standby").as_deref() == Some("off") {
        errs.push(
            c.path("hot_standby"),
            "must be on with replicas > 1: the standbys serve the read-only endpoint",
        );
    }
}

fn check_connections(c: &Config, errs: &mut ValidationErrors) {
    if let (Some(reserved), Some(max)) = (
        c.number("superuser_reserved_connections"),
        c.number("max_connections"),
    ) {
        if reserved >= max {
            let (at, relation, other) = if c.is_set("superuser_reserved_connections") {
                ("superuser_reserved_connections", "less", "max_connections")
            } else {
                ("max_connections", "more", "superuser_reserved_connections")
            };
            errs.push(
                c.path(at),
                format!(
                    "must be {relation} than {other}, which is {}: PostgreSQL refuses to start otherwise",
                    c.shown(other)
                ),
            );
        }
    }
    let parts = [
        "max_connections",
        "autovacuum_max_workers",
        "max_worker_processes",
        "max_wal_senders",
    ];
    let values: Option<Vec<f64>> = parts.iter().map(|p| c.number(p)).collect();
    let Some(values) = values else { return };
    let total: f64 = values.iter().sum::<f64>() + 1.0;
    if total > MAX_BACKENDS {
        let at = parts.iter().find(|p| c.is_set(p)).unwrap_or(&parts[0]);
        let sum: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
        errs.push(
            c.path(at),
            format!(
                "max_connections + autovacuum_max_workers + max_worker_processes + max_wal_senders + 1 must be at most {MAX_BACKENDS} (is {total} = {} + 1): PostgreSQL refuses to start with more backends",
                sum.join(" + ")
            ),
        );
    }
}

fn check_wal_sizes(c: &Config, errs: &mut ValidationErrors) {
    let Some(segment) = settings::lookup("wal_segment_size") else {
        return;
    };
    let Some(segment_bytes) = segment
        .default_value()
        .and_then(|v| v.as_f64())
        .and_then(|n| to_bytes(segment, n))
    else {
        return;
    };
    for name in ["min_wal_size", "max_wal_size"] {
        let Some(setting) = settings::lookup(name) else {
            continue;
        };
        let Some(bytes) = c.number(name).and_then(|n| to_bytes(setting, n)) else {
            continue;
        };
        // Postgres counts whole segments (`XLogMBVarToSegs`).
        if c.is_set(name) && (bytes / segment_bytes).floor() < 2.0 {
            let twice = 2.0 * segment_bytes / 1024.0 / 1024.0;
            errs.push(
                c.path(name),
                format!(
                    "must be at least {}MB, twice wal_segment_size ({}MB): PostgreSQL refuses to start otherwise (got {})",
                    twice,
                    twice / 2.0,
                    c.shown(name),
                ),
            );
        }
    }
}

fn check_recovery_targets(c: &Config, errs: &mut ValidationErrors) {
    let set: Vec<&str> = RECOVERY_TARGETS
        .iter()
        .copied()
        .filter(|t| c.word(t).is_some_and(|v| !v.is_empty()))
        .collect();
    for extra in set.iter().skip(1) {
        errs.push(
            c.path(extra),
            format!(
                "at most one of {} may be set ({} is set too): PostgreSQL refuses to start with several recovery targets",
                RECOVERY_TARGETS.join(", "),
                set[0]
            ),
        );
    }
}

fn check_unsupported(c: &Config, errs: &mut ValidationErrors) {
    if c.is_set("huge_pages") && c.word("huge_pages").as_deref() == Some("on") {
        errs.push(
            c.path("huge_pages"),
            "huge_pages = on needs huge pages reserved on the host, which pgplane's data planes do not do, so the server would not start; use try (the default) or off",
        );
    }
    if c.is_set("ssl") && c.word("ssl").as_deref() == Some("on") {
        errs.push(
            c.path("ssl"),
            "ssl = on needs a server certificate, which pgplane's data planes do not provision, so the server would not start",
        );
    }
}

fn check_shared_buffers(
    c: &Config,
    spec: &InstanceSpec,
    prefix: &str,
    options: &ValidateOptions,
    errs: &mut ValidationErrors,
) {
    if !c.is_set("shared_buffers") || options.is_unknown(&format!("{prefix}.resources.memory")) {
        return;
    }
    let (Some(setting), Ok(memory)) = (
        settings::lookup("shared_buffers"),
        parse_bytes(&spec.resources.memory),
    ) else {
        return;
    };
    let Some(buffers) = c
        .number("shared_buffers")
        .and_then(|n| to_bytes(setting, n))
    else {
        return;
    };
    let limit = u128::from(memory) * u128::from(SHARED_BUFFERS_MAX_PERCENT_OF_MEMORY) / 100;
    if buffers as u128 > limit {
        let limit_mb = limit / (1024 * 1024);
        errs.push(
            c.path("shared_buffers"),
            format!(
                "must be at most {SHARED_BUFFERS_MAX_PERCENT_OF_MEMORY}% of resources.memory {} ({limit_mb}MB): shared buffers count against the instance's memory limit, and connections, work_mem and maintenance need the rest (got {})",
                spec.resources.memory,
                c.shown("shared_buffers"),
            ),
        );
    }
}

/// `shared_preload_libraries`: a list of library names (no paths: a path
/// could load any file), each a library pgplane knows to be meant for
/// preloading ([`settings::preloadable_libraries`]). Whether the data plane
/// has its file is checked where the library directory is.
pub(super) fn check_preload_libraries(value: &str) -> Result<(), String> {
    let known = settings::preloadable_libraries();
    let mut unknown = Vec::new();
    for name in value.split(',').map(|s| s.trim().trim_matches('"')) {
        if name.is_empty() {
            continue;
        }
        if !is_library_name(name) {
            return Err(format!(
                "{name:?} is not a library name: list library names (letters, digits, '_', '-'), not paths"
            ));
        }
        if !known.contains(&name) {
            unknown.push(name);
        }
    }
    let Some(first) = unknown.first() else {
        return Ok(());
    };
    let names: Vec<String> = unknown.iter().map(|n| format!("{n:?}")).collect();
    let mut message = match names.len() {
        1 => format!("{} is not a library pgplane can preload", names[0]),
        _ => format!("{} are not libraries pgplane can preload", names.join(", ")),
    };
    message.push_str(&format!("; known: {}", known.join(", ")));
    if let Some(s) = closest(first, known.iter().copied()) {
        message.push_str(&format!("; did you mean {s:?}?"));
    }
    Err(message)
}

fn is_library_name(name: &str) -> bool {
    name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate_spec_with;

    fn errors(config: &[(&str, &str)], memory: &str, unknown: &[&str]) -> Vec<(String, String)> {
        let mut spec = InstanceSpec::default();
        spec.resources.memory = memory.to_owned();
        for (k, v) in config {
            spec.config.insert((*k).to_owned(), (*v).to_owned());
        }
        let options = ValidateOptions {
            unknown: unknown.iter().map(|u| (*u).to_owned()).collect(),
        };
        match validate_spec_with(&spec, "spec", &options) {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    /// (config, resources.memory, the errors: path and message).
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static [(&'static str, &'static str)],
    );

    #[test]
    fn combinations_postgres_refuses_to_start_with() {
        let cases: &[Case] = &[
            (
                &[("WAL_LEVEL", "Minimal"), ("max_wal_senders", "0")],
                "1Gi",
                &[("spec.config.WAL_LEVEL", "wal_level = minimal cannot be archived, and every instance's WAL is archived for its backups: use replica (the default) or logical")],
            ),
            (&[("wal_level", "logical")], "1Gi", &[]),
            (
                &[("superuser_reserved_connections", "100")],
                "1Gi",
                &[("spec.config.superuser_reserved_connections", "must be less than max_connections, which is 100 (the default): PostgreSQL refuses to start otherwise")],
            ),
            (
                &[("max_connections", "3")],
                "1Gi",
                &[("spec.config.max_connections", "must be more than superuser_reserved_connections, which is 3 (the default): PostgreSQL refuses to start otherwise")],
            ),
            (&[("max_connections", "4")], "1Gi", &[]),
            (
                &[("max_connections", "262130")],
                "1Gi",
                &[("spec.config.max_connections", "max_connections + autovacuum_max_workers + max_worker_processes + max_wal_senders + 1 must be at most 262143 (is 262152 = 262130 + 3 + 8 + 10 + 1): PostgreSQL refuses to start with more backends")],
            ),
            (&[("max_connections", "262121")], "1Gi", &[]),
            (
                &[("min_wal_size", "16MB"), ("max_wal_size", "31MB")],
                "1Gi",
                &[
                    ("spec.config.min_wal_size", "must be at least 32MB, twice wal_segment_size (16MB): PostgreSQL refuses to start otherwise (got 16MB)"),
                    ("spec.config.max_wal_size", "must be at least 32MB, twice wal_segment_size (16MB): PostgreSQL refuses to start otherwise (got 31MB)"),
                ],
            ),
            // Postgres does not refuse max_wal_size below min_wal_size.
            (&[("min_wal_size", "512MB"), ("max_wal_size", "64MB")], "1Gi", &[]),
            (
                &[("recovery_target_time", "2020-01-01"), ("recovery_target_xid", "100"), ("recovery_target", "")],
                "1Gi",
                &[("spec.config.recovery_target_xid", "at most one of recovery_target, recovery_target_lsn, recovery_target_name, recovery_target_time, recovery_target_xid may be set (recovery_target_time is set too): PostgreSQL refuses to start with several recovery targets")],
            ),
            (&[("recovery_target_name", "before-upgrade")], "1Gi", &[]),
        ];
        for (config, memory, want) in cases {
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
                .collect();
            assert_eq!(errors(config, memory, &[]), want, "{config:?}");
        }
    }

    #[test]
    fn what_the_data_plane_cannot_give() {
        let cases: &[Case] = &[
            (
                &[("huge_pages", "on")],
                "1Gi",
                &[("spec.config.huge_pages", "huge_pages = on needs huge pages reserved on the host, which pgplane's data planes do not do, so the server would not start; use try (the default) or off")],
            ),
            (
                &[("huge_pages", "TRUE")],
                "1Gi",
                &[("spec.config.huge_pages", "huge_pages = on needs huge pages reserved on the host, which pgplane's data planes do not do, so the server would not start; use try (the default) or off")],
            ),
            (&[("huge_pages", "try")], "1Gi", &[]),
            (&[("huge_pages", "off")], "1Gi", &[]),
            (
                &[("ssl", "yes")],
                "1Gi",
                &[("spec.config.ssl", "ssl = on needs a server certificate, which pgplane's data planes do not provision, so the server would not start")],
            ),
            (
                &[("shared_buffers", "4TB")],
                "1Gi",
                &[("spec.config.shared_buffers", "must be at most 80% of resources.memory 1Gi (819MB): shared buffers count against the instance's memory limit, and connections, work_mem and maintenance need the rest (got 4TB)")],
            ),
            (&[("shared_buffers", "819MB")], "1Gi", &[]),
            (
                &[("shared_buffers", "820MB")],
                "1Gi",
                &[("spec.config.shared_buffers", "must be at most 80% of resources.memory 1Gi (819MB): shared buffers count against the instance's memory limit, and connections, work_mem and maintenance need the rest (got 820MB)")],
            ),
            (
                &[("shared_buffers", "262144")],
                "2G",
                &[("spec.config.shared_buffers", "must be at most 80% of resources.memory 2G (1525MB): shared buffers count against the instance's memory limit, and connections, work_mem and maintenance need the rest (got 2GB)")],
            ),
            (&[("shared_buffers", "3GB")], "4Gi", &[]),
        ];
        for (config, memory, want) in cases {
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
                .collect();
            assert_eq!(errors(config, memory, &[]), want, "{config:?} {memory}");
        }
    }

    #[test]
    fn rules_skip_values_not_known_yet() {
        assert!(errors(
            &[("shared_buffers", "2GB")],
            "1Gi",
            &["spec.resources.memory"]
        )
        .is_empty());
        assert!(errors(&[("max_connections", "3")], "1Gi", &["spec.config"]).is_empty());
        // A known combination is still checked.
        assert_eq!(
            errors(
                &[("wal_level", "minimal")],
                "1Gi",
                &["spec.config.work_mem"]
            )
            .len(),
            1
        );
    }

    #[test]
    fn preload_libraries_are_known_library_names() {
        let check = |v: &str| check_preload_libraries(v);
        assert_eq!(check("pg_stat_statements, auto_explain"), Ok(()));
        assert_eq!(check("\"pg_stat_statements\",,"), Ok(()));
        assert_eq!(check(""), Ok(()));
        assert_eq!(
            check("does_not_exist"),
            Err("\"does_not_exist\" is not a library pgplane can preload; known: auth_delay, auto_explain, passwordcheck, pg_cron, pg_prewarm, pg_squeeze, pg_stat_statements, pgaudit, timescaledb".to_owned())
        );
        assert_eq!(
            check("pg_stat_statement,x"),
            Err("\"pg_stat_statement\", \"x\" are not libraries pgplane can preload; known: auth_delay, auto_explain, passwordcheck, pg_cron, pg_prewarm, pg_squeeze, pg_stat_statements, pgaudit, timescaledb; did you mean \"pg_stat_statements\"?".to_owned())
        );
        assert_eq!(
            check("$libdir/plugins/x"),
            Err("\"$libdir/plugins/x\" is not a library name: list library names (letters, digits, '_', '-'), not paths".to_owned())
        );
        assert!(check("/tmp/evil.so").is_err());
        assert!(
            check("PG_STAT_STATEMENTS").is_err(),
            "library files are case-sensitive"
        );
    }
}
