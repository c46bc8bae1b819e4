//! Strict validation of an [`InstanceSpec`]: every problem is reported at
//! once, each with the field path and what is allowed. Parameter values are
//! checked as PostgreSQL 15 reads them ([`crate::settings::value`]), and
//! [`config`] checks them together: combinations the server refuses to
//! start with, and what the instance's resources cannot hold.

mod config;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::quantity::{check_setting_value, parse_bytes, parse_cpu};
use crate::settings::{self, Context};
use crate::spec::{Ensure, Extension, InstanceSpec};

/// Postgres major versions pgplane can run.
pub const SUPPORTED_VERSIONS: &[&str] = &["15"];
/// The most members (one primary and its standbys) an instance may have.
pub const MAX_REPLICAS: u32 = 5;
/// The most members an instance on the Kubernetes data plane may have: its
/// StatefulSet runs one server (standbys are built by the local runtime).
pub const MAX_REPLICAS_KUBERNETES: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// e.g. `spec.config.port`
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// What [`validate_spec_with`] needs besides the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Field paths (as errors name them: `spec.config.max_wal_senders`,
    /// `spec.resources.memory`, `spec.config` for all of it) whose values
    /// are not known yet, such as Terraform's unknown values at plan time.
    /// Rules that relate fields skip those involving one; errors of the
    /// fields themselves are reported and left for the caller to drop.
    pub unknown: Vec<String>,
}

impl ValidateOptions {
    pub(crate) fn is_unknown(&self, path: &str) -> bool {
        self.unknown.iter().any(|u| {
            path == u
                || path
                    .strip_prefix(u.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }
}

/// Validates a spec. `prefix` is the path of the spec itself, e.g. `spec`.
pub fn validate_spec(spec: &InstanceSpec, prefix: &str) -> Result<(), ValidationErrors> {
    validate_spec_with(spec, prefix, &ValidateOptions::default())
}

/// [`validate_spec`] for a spec some of whose values are not known yet.
pub fn validate_spec_with(
    spec: &InstanceSpec,
    prefix: &str,
    options: &ValidateOptions,
) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    if !SUPPORTED_VERSIONS.contains(&spec.postgres_version.as_str()) {
        errs.push(
            format!("{prefix}.postgresVersion"),
            format!(
                "unsupported version {:?}; supported: {}",
                spec.postgres_version,
                SUPPORTED_VERSIONS.join(", ")
            ),
        );
    }
    if spec.replicas == 0 || spec.replicas > MAX_REPLICAS {
        errs.push(
            format!("{prefix}.replicas"),
            format!(
                "must be between 1 and {MAX_REPLICAS} (got {})",
                spec.replicas
            ),
        );
    }
    if let Some(n) = spec.synchronous.standbys() {
        let standbys = spec.replicas.saturating_sub(1);
        if n > standbys {
            errs.push(
                format!("{prefix}.synchronous"),
                match standbys {
                    0 => format!(
                        "needs standbys to confirm commits: set replicas to {} or more, or synchronous to off",
                        n + 1
                    ),
                    _ => format!(
                        "asks {n} standbys to confirm each commit, and replicas = {} has {standbys}",
                        spec.replicas
                    ),
                },
            );
        }
    }
    if let Err(e) = parse_cpu(&spec.resources.cpu) {
        errs.push(format!("{prefix}.resources.cpu"), e.to_string());
    }
    if let Err(e) = parse_bytes(&spec.resources.memory) {
        errs.push(format!("{prefix}.resources.memory"), e.to_string());
    }
    if let Err(e) = parse_bytes(&spec.storage) {
        errs.push(format!("{prefix}.storage"), e.to_string());
    }
    check_extension_list(&spec.extensions, &format!("{prefix}.extensions"), &mut errs);
    crate::inside::check(spec, prefix, &mut errs);
    let mut first_spelling: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in &spec.config {
        let path = format!("{prefix}.config.{name}");
        if let Some(other) = first_spelling.insert(name.to_ascii_lowercase(), name) {
            errs.push(
                path,
                format!("{other:?} and {name:?} name the same parameter (names are case-insensitive): set it once"),
            );
        } else if let Err(message) = check_parameter(name, value) {
            errs.push(path, message);
        }
    }
    config::check(spec, prefix, options, &mut errs);
    check_backup(spec, prefix, &mut errs);
    errs.into_result()
}

fn check_backup(spec: &InstanceSpec, prefix: &str, errs: &mut ValidationErrors) {
    if let Err(e) = crate::backup::Schedule::parse(&spec.backup.schedule) {
        errs.push(format!("{prefix}.backup.schedule"), e);
    }
    if let Some(restore) = &spec.restore {
        if crate::name::InstanceName::parse(&restore.from).is_err() {
            errs.push(
                format!("{prefix}.restore.from"),
                format!("{:?} is not an instance name", restore.from),
            );
        }
        if let Err((field, message)) = restore.target() {
            errs.push(format!("{prefix}.restore.{field}"), message);
        }
    }
}

/// Checks one list of extensions (the instance's or a database's); `path`
/// is the list's, e.g. `spec.extensions`.
pub(crate) fn check_extension_list(
    extensions: &[Extension],
    path: &str,
    errs: &mut ValidationErrors,
) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, ext) in extensions.iter().enumerate() {
        if !is_extension_name(&ext.name) {
            errs.push(
                format!("{path}[{i}].name"),
                format!(
                    "{:?} is not a valid extension name: use lower-case letters, digits, '_' and '-'",
                    ext.name
                ),
            );
        }
        if let Some(version) = &ext.version {
            if ext.ensure == Ensure::Absent {
                errs.push(
                    format!("{path}[{i}].version"),
                    "an extension declared absent has no version: remove the version or the ensure",
                );
            } else if !is_extension_version(version) {
                errs.push(
                    format!("{path}[{i}].version"),
                    format!(
                        "{version:?} is not a valid extension version: use letters, digits, '.', '_' and single '-' (e.g. \"1.8\", \"1.4-1\")"
                    ),
                );
            }
        }
        match seen.get(ext.name.as_str()) {
            Some(&first) if extensions[first] != *ext => errs.push(
                format!("{path}[{i}]"),
                format!(
                    "extension {:?} is declared twice (also {path}[{first}]) differently: declare it once",
                    ext.name
                ),
            ),
            Some(_) => {}
            None => {
                seen.insert(&ext.name, i);
            }
        }
    }
}

/// A version PostgreSQL accepts in script file names: no `--`, no leading
/// or trailing `-`, no path separators.
fn is_extension_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && !version.contains("--")
        && !version.starts_with('-')
        && !version.ends_with('-')
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_parameter(name: &str, value: &str) -> Result<(), String> {
    if settings::is_reserved(name) {
        return Err(format!(
            "parameter {name:?} is managed by pgplane and may not be set"
        ));
    }
    if value.contains('\0') || value.contains('\n') {
        return Err("value must be a single line".to_owned());
    }
    match settings::lookup(name) {
        Some(s) if s.context == Context::Internal => Err(format!(
            "parameter {name:?} is read-only (fixed when Postgres was built)"
        )),
        Some(s) if !s.alter_system => Err(match settings::lookup(&format!("default_{}", s.name)) {
            Some(d) => format!(
                "parameter {name:?} applies to one transaction and cannot be configured; set {:?}",
                d.name
            ),
            None => format!("parameter {name:?} cannot be configured"),
        }),
        Some(s) if s.name == "shared_preload_libraries" => config::check_preload_libraries(value),
        Some(_) => check_setting_value(name, value),
        // Extension parameters (pg_stat_statements.max) are namespaced.
        None if is_custom_parameter(name) => Ok(()),
        None => {
            let mut message = format!(
                "unknown parameter {name:?} for PostgreSQL 15 (see pg_settings; extension parameters are written extension.name)"
            );
            if let Some(s) = settings::suggest_name(name) {
                message.push_str(&format!("; did you mean {s:?}?"));
            }
            Err(message)
        }
    }
}

fn is_custom_parameter(name: &str) -> bool {
    let mut parts = name.split('.');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: &InstanceSpec) -> Vec<(String, String)> {
        match validate_spec(spec, "spec") {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    #[test]
    fn extension_versions_and_repeats_are_checked_by_field() {
        let spec = InstanceSpec {
            extensions: vec![
                Extension {
                    version: Some("1.8".into()),
                    ..Extension::new("hstore")
                },
                Extension {
                    version: Some("../x".into()),
                    ..Extension::new("citext")
                },
                Extension {
                    version: Some("1.7".into()),
                    ..Extension::new("hstore")
                },
                Extension {
                    version: Some("1.0".into()),
                    ensure: Ensure::Absent,
                    ..Extension::new("pgaudit")
                },
            ],
            ..Default::default()
        };
        let errs = errors(&spec);
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.extensions[1].version",
                "spec.extensions[2]",
                "spec.extensions[3].version"
            ],
            "{errs:?}"
        );
        assert!(
            errs[1]
                .1
                .contains("declared twice (also spec.extensions[0])"),
            "{errs:?}"
        );
        let ok = InstanceSpec {
            extensions: vec![
                Extension {
                    version: Some("1.4-1".into()),
                    ..Extension::new("pg_cron")
                },
                Extension::new("pg_cron"),
            ],
            ..Default::default()
        };
        assert_eq!(
            errors(&ok).len(),
            1,
            "a repeat that differs only by version is refused"
        );
    }

    #[test]
    fn default_spec_is_valid() {
        assert!(errors(&InstanceSpec::default()).is_empty());
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let mut spec = InstanceSpec {
            postgres_version: "9".into(),
            replicas: 0,
            storage: "10GB".into(),
            extensions: vec![Extension::new("Bad Name")],
            ..Default::default()
        };
        spec.resources.cpu = "lots".into();
        for (k, v) in [
            ("port", "5433"),
            ("data_directory", "/tmp"),
            ("work_mem", "16XB"),
            ("no_such_param", "1"),
            ("server_version", "99"),
            ("pg_stat_statements.max", "5000"),
        ] {
            spec.config.insert(k.into(), v.into());
        }
        let errs = errors(&spec);
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.postgresVersion",
                "spec.replicas",
                "spec.resources.cpu",
                "spec.storage",
                "spec.extensions[0].name",
                "spec.config.data_directory",
                "spec.config.no_such_param",
                "spec.config.port",
                "spec.config.server_version",
                "spec.config.work_mem",
            ]
        );
        let msg = |p: &str| &errs.iter().find(|(q, _)| q == p).unwrap().1;
        assert!(msg("spec.config.port").contains("managed by pgplane"));
        assert!(msg("spec.config.no_such_param").contains("unknown parameter"));
        assert!(msg("spec.config.server_version").contains("read-only"));
        assert!(msg("spec.postgresVersion").contains("supported: 15"));
    }

    #[test]
    fn parameter_errors_say_what_is_allowed() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "shared_buffers",
                "4",
                "must be between 128kB and 8TB - 8kB (got \"4\" = 32kB)",
            ),
            (
                "wal_level",
                "archives",
                "expected one of: minimal, replica, logical (got \"archives\")",
            ),
            (
                "wal_level",
                "replca",
                "expected one of: minimal, replica, logical (got \"replca\"); did you mean \"replica\"?",
            ),
            (
                "max_connections",
                "0",
                "must be between 1 and 262143 (got \"0\")",
            ),
            (
                "work_mem",
                "1GiB",
                "\"1GiB\" has an invalid unit \"GiB\": use B, kB, MB, GB or TB (case-sensitive); did you mean \"1GB\"?",
            ),
            (
                "transaction_isolation",
                "serializable",
                "parameter \"transaction_isolation\" applies to one transaction and cannot be configured; set \"default_transaction_isolation\"",
            ),
            (
                "shared_buffer",
                "1GB",
                "unknown parameter \"shared_buffer\" for PostgreSQL 15 (see pg_settings; extension parameters are written extension.name); did you mean \"shared_buffers\"?",
            ),
            (
                "shared_preload_libraries",
                "does_not_exist",
                "\"does_not_exist\" is not a library pgplane can preload; known: auth_delay, auto_explain, passwordcheck, pg_cron, pg_prewarm, pg_squeeze, pg_stat_statements, pgaudit, timescaledb",
            ),
            ("work_mem", "1MB\n", "value must be a single line"),
        ];
        for (name, value, want) in cases {
            let spec = InstanceSpec {
                config: [((*name).to_owned(), (*value).to_owned())].into(),
                ..Default::default()
            };
            let path = format!("spec.config.{name}");
            assert_eq!(
                errors(&spec),
                [(path, (*want).to_owned())],
                "{name}={value:?}"
            );
        }
    }

    #[test]
    fn a_parameter_is_set_once_whatever_its_case() {
        let spec = InstanceSpec {
            config: [("work_mem", "1MB"), ("WORK_MEM", "2MB")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            ..Default::default()
        };
        assert_eq!(
            errors(&spec),
            [(
                "spec.config.work_mem".to_owned(),
                "\"WORK_MEM\" and \"work_mem\" name the same parameter (names are case-insensitive): set it once".to_owned()
            )]
        );
    }
}
