//! The extension catalog: what a data plane can install, derived from its
//! extension control and script files plus [`REVIEWED`], the facts files
//! cannot tell (which library must be preloaded, in which order, and the
//! settings it needs), and the checks of a spec's extensions against it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::spec::{Ensure, Extension, InstanceSpec};
use crate::validate::ValidationErrors;

/// What the files of one extension cannot say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reviewed {
    pub extension: &'static str,
    /// The library that must be in `shared_preload_libraries`.
    pub library: &'static str,
    /// Position in `shared_preload_libraries`: lower first, ties by name.
    pub order: u16,
    /// Settings the extension needs to work, set unless the spec sets them.
    pub settings: &'static [(&'static str, &'static str)],
    /// Schemas of the extension the instance's client role may use (the
    /// extension is created by pgplane's own role).
    pub usage_schemas: &'static [&'static str],
}

/// The order of a preload library that does not care where it is.
pub const DEFAULT_PRELOAD_ORDER: u16 = 50;

/// Extensions whose library must be preloaded, reviewed by hand.
pub const REVIEWED: &[Reviewed] = &[
    Reviewed {
        // Its planner and executor hooks must wrap every other library's.
        extension: "timescaledb",
        library: "timescaledb",
        order: 10,
        settings: &[],
        usage_schemas: &[],
    },
    Reviewed {
        extension: "pg_stat_statements",
        library: "pg_stat_statements",
        order: DEFAULT_PRELOAD_ORDER,
        settings: &[],
        usage_schemas: &[],
    },
    Reviewed {
        // The scheduler runs in one database, the one the instance serves;
        // background workers run the jobs, so no connection needs a password.
        extension: "pg_cron",
        library: "pg_cron",
        order: DEFAULT_PRELOAD_ORDER,
        settings: &[
            ("cron.database_name", "postgres"),
            ("cron.use_background_workers", "on"),
        ],
        // Jobs a tenant schedules run as the role that scheduled them.
        usage_schemas: &["cron"],
    },
    Reviewed {
        extension: "pgaudit",
        library: "pgaudit",
        order: DEFAULT_PRELOAD_ORDER,
        settings: &[],
        usage_schemas: &[],
    },
    Reviewed {
        extension: "pg_squeeze",
        library: "pg_squeeze",
        order: DEFAULT_PRELOAD_ORDER,
        settings: &[],
        usage_schemas: &[],
    },
];

pub fn reviewed(extension: &str) -> Option<&'static Reviewed> {
    REVIEWED.iter().find(|r| r.extension == extension)
}

/// One extension a data plane can install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AvailableExtension {
    pub name: String,
    /// What `CREATE EXTENSION` without `VERSION` installs; empty when unknown.
    #[serde(default)]
    pub default_version: String,
    /// Every version `CREATE EXTENSION … VERSION` accepts (an install script,
    /// or one reached from one through update scripts), sorted; empty when
    /// unknown.
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub comment: String,
    /// Extensions it needs (`requires`), created with it.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Whether a database owner may create it without a superuser.
    #[serde(default)]
    pub trusted: bool,
    /// The Debian package its control file belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// The library that must be in `shared_preload_libraries`; declaring
    /// the extension then restarts the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload_library: Option<String>,
    /// Position of `preload_library` among the preloaded ones (lower first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload_order: Option<u16>,
    /// Whether declaring it (or taking it out of the spec) restarts the
    /// server: it has a preload library.
    #[serde(default)]
    pub restart_required: bool,
}

impl AvailableExtension {
    /// An entry known only by name (a data plane that registered names only).
    pub fn named(name: &str) -> AvailableExtension {
        let r = reviewed(name);
        AvailableExtension {
            name: name.to_owned(),
            default_version: String::new(),
            versions: Vec::new(),
            comment: String::new(),
            requires: Vec::new(),
            trusted: false,
            package: None,
            preload_library: r.map(|r| r.library.to_owned()),
            preload_order: r.map(|r| r.order),
            restart_required: r.is_some(),
        }
    }
}

/// The parts of an extension's control file the catalog uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlFile {
    pub default_version: String,
    pub comment: String,
    pub requires: Vec<String>,
    pub trusted: bool,
    pub superuser: bool,
}

/// Reads a control file as PostgreSQL does (`name = value` lines, `#`
/// comments, values quoted with `'`); unknown keys are ignored.
pub fn parse_control(text: &str) -> ControlFile {
    let mut out = ControlFile {
        superuser: true,
        ..ControlFile::default()
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .map(|v| v.replace("''", "'"))
            .unwrap_or_else(|| value.split('#').next().unwrap_or("").trim().to_owned());
        let yes = || matches!(value.to_ascii_lowercase().as_str(), "true" | "on" | "yes");
        match key.trim() {
            "default_version" => out.default_version = value,
            "comment" => out.comment = value,
            "requires" => {
                out.requires = value
                    .split(',')
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty())
                    .collect()
            }
            "trusted" => out.trusted = yes(),
            "superuser" => out.superuser = yes(),
            _ => {}
        }
    }
    out
}

/// The versions of `extension` its script files (file names in the
/// extension directory) make installable: those with an install script
/// `NAME--V.sql`, and those reached from them through update scripts
/// `NAME--A--B.sql`. Sorted by [`compare_versions`].
pub fn versions_from_scripts<'a>(
    extension: &str,
    files: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let prefix = format!("{extension}--");
    let mut installable: BTreeSet<String> = BTreeSet::new();
    let mut updates: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        let Some(rest) = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".sql"))
        else {
            continue;
        };
        match rest.split_once("--") {
            None => {
                installable.insert(rest.to_owned());
            }
            Some((from, to)) if !to.contains("--") => {
                updates
                    .entry(from.to_owned())
                    .or_default()
                    .push(to.to_owned());
            }
            Some(_) => {}
        }
    }
    let mut reached = installable.clone();
    let mut todo: Vec<String> = installable.into_iter().collect();
    while let Some(v) = todo.pop() {
        for next in updates.get(&v).into_iter().flatten() {
            if reached.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    let mut out: Vec<String> = reached.into_iter().collect();
    out.sort_by(|a, b| compare_versions(a, b));
    out
}

/// Orders version names by their numeric parts (`1.10` after `1.9`), then
/// as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    parts(a).cmp(&parts(b)).then_with(|| a.cmp(b))
}

/// Builds a catalog entry from an extension's control file and the file
/// names of its directory; `library_present` says whether a file exists for
/// a library the name of the reviewed table gives it. An extension whose
/// preload library is missing is left out: declaring it would leave a
/// server that cannot start.
pub fn catalog_entry<'a>(
    name: &str,
    control: &ControlFile,
    files: impl IntoIterator<Item = &'a str>,
    package: Option<String>,
    library_present: impl Fn(&str) -> bool,
) -> Option<AvailableExtension> {
    let r = reviewed(name);
    if let Some(r) = r {
        if !library_present(r.library) {
            return None;
        }
    }
    let versions = versions_from_scripts(name, files);
    Some(AvailableExtension {
        name: name.to_owned(),
        default_version: control.default_version.clone(),
        versions,
        comment: control.comment.clone(),
        requires: control.requires.clone(),
        trusted: control.trusted,
        package,
        preload_library: r.map(|r| r.library.to_owned()),
        preload_order: r.map(|r| r.order),
        restart_required: r.is_some(),
    })
}

/// Checks a spec's extensions (the instance's and every database's)
/// against a data plane's catalog: each present one is available, at an
/// available version; every error names the field.
pub fn check_against_catalog(
    spec: &InstanceSpec,
    catalog: &[AvailableExtension],
    data_plane: &str,
    prefix: &str,
) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    check_list(
        &spec.extensions,
        catalog,
        data_plane,
        &format!("{prefix}.extensions"),
        &mut errs,
    );
    for (i, db) in spec.databases.iter().enumerate() {
        check_list(
            &db.extensions,
            catalog,
            data_plane,
            &format!("{prefix}.databases[{i}].extensions"),
            &mut errs,
        );
    }
    errs.into_result()
}

fn check_list(
    extensions: &[Extension],
    catalog: &[AvailableExtension],
    data_plane: &str,
    path: &str,
    errs: &mut ValidationErrors,
) {
    let names: Vec<&str> = catalog.iter().map(|e| e.name.as_str()).collect();
    for (i, ext) in extensions.iter().enumerate() {
        if ext.ensure == Ensure::Absent {
            continue;
        }
        let Some(entry) = catalog.iter().find(|e| e.name == ext.name) else {
            let suggestion = crate::settings::closest(&ext.name, names.iter().copied())
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_default();
            errs.push(
                format!("{path}[{i}].name"),
                format!(
                    "extension {:?} is not available on data plane {data_plane:?}{suggestion}; available: {}",
                    ext.name,
                    names.join(", ")
                ),
            );
            continue;
        };
        if let Some(version) = &ext.version {
            if !entry.versions.is_empty() && !entry.versions.contains(version) {
                errs.push(
                    format!("{path}[{i}].version"),
                    format!(
                        "version {version:?} of extension {:?} is not available on data plane {data_plane:?}; available: {}",
                        ext.name,
                        entry.versions.join(", ")
                    ),
                );
            }
        }
    }
}

/// The libraries a spec's present extensions need preloaded, in order.
pub fn preload_libraries(spec: &InstanceSpec) -> Vec<&'static Reviewed> {
    let mut out: Vec<&'static Reviewed> = spec
        .extensions
        .iter()
        .filter(|e| e.ensure == Ensure::Present)
        .filter_map(|e| reviewed(&e.name))
        .collect();
    out.sort_by_key(|r| (r.order, r.library));
    out.dedup_by_key(|r| r.library);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_files_read_as_postgres_reads_them() {
        let c = parse_control(
            "# postgis topology extension\ncomment = 'PostGIS topology spatial types and functions'\n\
             default_version = '3.3.2'\nrelocatable = false\nschema = topology\nrequires = postgis\n",
        );
        assert_eq!(c.default_version, "3.3.2");
        assert_eq!(c.requires, ["postgis"]);
        assert!(!c.trusted);
        assert!(c.superuser);
        let h = parse_control("default_version = '1.8'\ntrusted = true\nrequires = 'a, b'\n");
        assert!(h.trusted);
        assert_eq!(h.requires, ["a", "b"]);
    }

    #[test]
    fn versions_are_the_installable_and_the_reachable_ones() {
        let files = [
            "hstore--1.4.sql",
            "hstore--1.4--1.5.sql",
            "hstore--1.5--1.6.sql",
            "hstore--1.1--1.2.sql",
            "hstore.control",
            "hstore_plperl--1.0.sql",
            "postgis--2.0.0--3.3.2.sql",
        ];
        assert_eq!(
            versions_from_scripts("hstore", files),
            ["1.4", "1.5", "1.6"]
        );
        // Only upgrade scripts: nothing can be installed at those versions.
        assert!(versions_from_scripts("postgis", files).is_empty());
        assert_eq!(
            versions_from_scripts(
                "x",
                ["x--1.9.sql", "x--1.9--1.10.sql", "x--1.10--1.10-1.sql"]
            ),
            ["1.9", "1.10", "1.10-1"]
        );
    }

    #[test]
    fn an_extension_whose_preload_library_is_missing_is_not_offered() {
        let control = parse_control("default_version = '2.9.1'\n");
        let present = |lib: &str| lib != "timescaledb";
        assert_eq!(
            catalog_entry(
                "timescaledb",
                &control,
                ["timescaledb--2.9.1.sql"],
                None,
                present
            ),
            None
        );
        let cron = catalog_entry(
            "pg_cron",
            &parse_control("default_version = '1.4-1'\n"),
            ["pg_cron--1.0.sql", "pg_cron--1.0--1.1.sql"],
            Some("postgresql-15-cron".into()),
            present,
        )
        .unwrap();
        assert_eq!(cron.preload_library.as_deref(), Some("pg_cron"));
        assert!(cron.restart_required);
        assert_eq!(cron.versions, ["1.0", "1.1"]);
    }

    fn hstore() -> AvailableExtension {
        AvailableExtension {
            versions: vec!["1.4".into(), "1.7".into(), "1.8".into()],
            default_version: "1.8".into(),
            ..AvailableExtension::named("hstore")
        }
    }

    #[test]
    fn unknown_extensions_and_versions_are_refused_by_field() {
        let spec = InstanceSpec {
            extensions: vec![
                Extension::new("hstor"),
                Extension {
                    version: Some("9.9".into()),
                    ..Extension::new("hstore")
                },
                Extension {
                    ensure: Ensure::Absent,
                    ..Extension::new("gone")
                },
            ],
            ..Default::default()
        };
        let errs = check_against_catalog(&spec, &[hstore()], "local", "spec").unwrap_err();
        let got: Vec<(&str, &str)> = errs
            .0
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "spec.extensions[0].name",
                    "extension \"hstor\" is not available on data plane \"local\" (did you mean \"hstore\"?); available: hstore"
                ),
                (
                    "spec.extensions[1].version",
                    "version \"9.9\" of extension \"hstore\" is not available on data plane \"local\"; available: 1.4, 1.7, 1.8"
                ),
            ]
        );
    }

    #[test]
    fn preload_libraries_follow_the_reviewed_order() {
        let spec = InstanceSpec {
            extensions: ["pgaudit", "hstore", "timescaledb", "pg_cron"]
                .into_iter()
                .map(Extension::new)
                .chain([Extension {
                    ensure: Ensure::Absent,
                    ..Extension::new("pg_stat_statements")
                }])
                .collect(),
            ..Default::default()
        };
        let libs: Vec<&str> = preload_libraries(&spec).iter().map(|r| r.library).collect();
        assert_eq!(libs, ["timescaledb", "pg_cron", "pgaudit"]);
    }
}
