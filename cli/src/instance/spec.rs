//! From command-line flags to an [`InstanceSpec`]: the whole spec for
//! `create`, a [`SpecChange`] applied to the current spec for `update`.
//!
//! Only the shape of the flags is checked here (`KEY=VALUE`, quantities,
//! contradictions between flags); the control plane validates the spec itself
//! and answers with field paths.

use std::collections::BTreeMap;
use std::fmt;

use domain::quantity;
use domain::{Extension, InstanceSpec, Resources};

/// Flags that contradict each other or the spec they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError(pub String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `--config KEY=VALUE`: splits at the first `=`, so values may contain `=`.
/// The value may be empty (`search_path=`); the key may not.
pub fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    let expected = || format!("expected KEY=VALUE, like work_mem=16MB (got {arg:?})");
    let (key, value) = arg.split_once('=').ok_or_else(expected)?;
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(expected());
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `--unset-config KEY`: a parameter name, not an assignment.
pub fn parse_config_key(arg: &str) -> Result<String, String> {
    let key = arg.trim();
    if key.is_empty() || key.contains('=') || key.contains(char::is_whitespace) {
        return Err(format!(
            "expected a parameter name, like work_mem (got {arg:?})"
        ));
    }
    Ok(key.to_owned())
}

/// `--cpu`: cores (`1`, `0.5`) or millicores (`500m`), kept as written.
pub fn parse_cpu(arg: &str) -> Result<String, String> {
    quantity::parse_cpu(arg).map_err(|e| e.to_string())?;
    Ok(arg.trim().to_owned())
}

/// `--memory`, `--storage`: a byte quantity (`512Mi`, `10Gi`), kept as written.
pub fn parse_bytes(arg: &str) -> Result<String, String> {
    quantity::parse_bytes(arg).map_err(|e| e.to_string())?;
    Ok(arg.trim().to_owned())
}

/// The spec `create` sends, from its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSpec<'a> {
    pub postgres_version: &'a str,
    pub cpu: &'a str,
    pub memory: &'a str,
    pub storage: &'a str,
    pub extensions: &'a [String],
    pub config: &'a [(String, String)],
    pub superuser_access: bool,
}

impl NewSpec<'_> {
    pub fn build(&self) -> Result<InstanceSpec, FlagError> {
        let spec = InstanceSpec {
            postgres_version: self.postgres_version.to_owned(),
            resources: Resources {
                cpu: self.cpu.to_owned(),
                memory: self.memory.to_owned(),
            },
            storage: self.storage.to_owned(),
            extensions: self.extensions.iter().map(|e| extension(e)).collect(),
            config: config_map(self.config)?,
            superuser_access: self.superuser_access,
            ..InstanceSpec::default()
        };
        Ok(spec.normalized())
    }
}

/// What `update` changes; everything else in the spec stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecChange<'a> {
    /// `name` or `name=version`.
    pub add_extensions: &'a [String],
    /// Taken out of the spec (left installed).
    pub remove_extensions: &'a [String],
    /// Declared absent (dropped).
    pub drop_extensions: &'a [String],
    pub set_config: &'a [(String, String)],
    pub unset_config: &'a [String],
    pub cpu: Option<&'a str>,
    pub memory: Option<&'a str>,
    pub storage: Option<&'a str>,
    pub superuser_access: Option<bool>,
}

impl SpecChange<'_> {
    /// `current` with the change applied. Adding an extension that is there
    /// or removing one (or a parameter) that is not is not an error: the
    /// result is the same, and the caller reports "nothing to change".
    pub fn apply(&self, current: &InstanceSpec) -> Result<InstanceSpec, FlagError> {
        let added: Vec<Extension> = self.add_extensions.iter().map(|e| extension(e)).collect();
        for (flag, names) in [
            ("--remove-extension", self.remove_extensions),
            ("--drop-extension", self.drop_extensions),
        ] {
            if let Some(e) = added.iter().find(|e| names.contains(&e.name)) {
                return Err(FlagError(format!(
                    "extension {} is both added (--extension) and removed ({flag})",
                    e.name
                )));
            }
        }
        if let Some(e) = self
            .remove_extensions
            .iter()
            .find(|e| self.drop_extensions.contains(e))
        {
            return Err(FlagError(format!(
                "extension {e} is both removed (--remove-extension) and dropped (--drop-extension)"
            )));
        }
        let set = config_map(self.set_config)?;
        if let Some(k) = self.unset_config.iter().find(|k| set.contains_key(*k)) {
            return Err(FlagError(format!(
                "parameter {k} is both set (--config) and unset (--unset-config)"
            )));
        }

        let mut spec = current.clone();
        let dropped = self.drop_extensions.iter().map(|name| Extension {
            ensure: domain::Ensure::Absent,
            ..Extension::new(name.trim())
        });
        let changes: Vec<Extension> = added.into_iter().chain(dropped).collect();
        spec.extensions.retain(|e| {
            !self.remove_extensions.contains(&e.name) && !changes.iter().any(|c| c.name == e.name)
        });
        spec.extensions.extend(changes);
        for key in self.unset_config {
            spec.config.remove(key);
        }
        spec.config.extend(set);
        if let Some(cpu) = self.cpu {
            spec.resources.cpu = cpu.to_owned();
        }
        if let Some(memory) = self.memory {
            spec.resources.memory = memory.to_owned();
        }
        if let Some(storage) = self.storage {
            spec.storage = storage.to_owned();
        }
        if let Some(superuser_access) = self.superuser_access {
            spec.superuser_access = superuser_access;
        }
        Ok(spec.normalized())
    }
}

/// `--role NAME` and `--database NAME[:OWNER]`: declares each (a login
/// role with the defaults; a database owned by `postgres` unless named),
/// keeping what the spec already declares about it.
pub fn declare_inside(spec: &mut InstanceSpec, roles: &[String], databases: &[String]) {
    for name in roles.iter().map(|r| r.trim()) {
        match spec.roles.iter_mut().find(|r| r.name == name) {
            Some(role) => role.ensure = domain::Ensure::Present,
            None => spec.roles.push(domain::Role::new(name)),
        }
    }
    for declared in databases.iter().map(|d| domain::Database::parse(d)) {
        match spec.databases.iter_mut().find(|d| d.name == declared.name) {
            Some(db) => {
                db.ensure = domain::Ensure::Present;
                db.owner = declared.owner;
            }
            None => spec.databases.push(declared),
        }
    }
    *spec = std::mem::take(spec).normalized();
}

/// `name` or `name=version`.
fn extension(text: &str) -> Extension {
    Extension::parse(text)
}

/// `--config` pairs as a map; the same key twice with different values is a
/// mistake worth pointing out rather than silently picking one.
fn config_map(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, FlagError> {
    let mut map = BTreeMap::new();
    for (key, value) in pairs {
        if let Some(earlier) = map.insert(key.clone(), value.clone()) {
            if &earlier != value {
                return Err(FlagError(format!(
                    "--config {key} given twice with different values ({key}={earlier} and {key}={value})"
                )));
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(parse_key_value("work_mem=16MB"), Ok(kv("work_mem", "16MB")));
        assert_eq!(
            parse_key_value("shared_preload_libraries=a,b"),
            Ok(kv("shared_preload_libraries", "a,b"))
        );
        assert_eq!(parse_key_value("opt=a=b"), Ok(kv("opt", "a=b")));
        assert_eq!(parse_key_value("search_path="), Ok(kv("search_path", "")));
        assert_eq!(parse_key_value(" jit =on"), Ok(kv("jit", "on")));
    }

    #[test]
    fn key_value_errors_quote_the_bad_argument() {
        for bad in ["work_mem", "=16MB", "", "work mem=1"] {
            let err = parse_key_value(bad).unwrap_err();
            assert!(err.contains("KEY=VALUE"), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn config_keys_to_unset_are_bare_names() {
        assert_eq!(parse_config_key("work_mem"), Ok("work_mem".to_owned()));
        assert!(parse_config_key("work_mem=1").is_err());
        assert!(parse_config_key("").is_err());
    }

    #[test]
    fn quantities_are_checked_and_kept_as_written() {
        assert_eq!(parse_cpu("500m"), Ok("500m".to_owned()));
        assert_eq!(parse_bytes("2Gi"), Ok("2Gi".to_owned()));
        assert!(parse_cpu("lots").unwrap_err().contains("cpu"));
        assert!(parse_bytes("10GB").unwrap_err().contains("Gi"));
    }

    #[test]
    fn create_builds_a_normalised_spec_from_flags() {
        let exts = strings(&["hstore", "citext", "hstore"]);
        let config = [kv("work_mem", "16MB"), kv("jit", "off")];
        let spec = NewSpec {
            postgres_version: "15",
            cpu: "2",
            memory: "4Gi",
            storage: "20Gi",
            extensions: &exts,
            config: &config,
            superuser_access: false,
        }
        .build()
        .unwrap();
        let mut expected = InstanceSpec {
            resources: Resources {
                cpu: "2".into(),
                memory: "4Gi".into(),
            },
            storage: "20Gi".into(),
            extensions: vec![extension("citext"), extension("hstore")],
            ..InstanceSpec::default()
        };
        expected.config.insert("jit".into(), "off".into());
        expected.config.insert("work_mem".into(), "16MB".into());
        assert_eq!(spec, expected);
    }

    #[test]
    fn create_rejects_one_key_with_two_values() {
        let config = [kv("work_mem", "16MB"), kv("work_mem", "32MB")];
        let err = NewSpec {
            postgres_version: "15",
            cpu: "1",
            memory: "1Gi",
            storage: "10Gi",
            extensions: &[],
            config: &config,
            superuser_access: false,
        }
        .build()
        .unwrap_err();
        assert!(err.0.contains("work_mem=16MB and work_mem=32MB"), "{err}");
    }

    fn current() -> InstanceSpec {
        let mut spec = InstanceSpec {
            extensions: vec![extension("citext"), extension("hstore")],
            ..InstanceSpec::default()
        };
        spec.config.insert("work_mem".into(), "4MB".into());
        spec.config.insert("jit".into(), "on".into());
        spec
    }

    #[test]
    fn update_changes_only_what_the_flags_name() {
        let add = strings(&["pg_trgm"]);
        let remove = strings(&["hstore"]);
        let set = [kv("work_mem", "16MB"), kv("max_connections", "50")];
        let unset = strings(&["jit"]);
        let new = SpecChange {
            add_extensions: &add,
            remove_extensions: &remove,
            set_config: &set,
            unset_config: &unset,
            memory: Some("2Gi"),
            ..SpecChange::default()
        }
        .apply(&current())
        .unwrap();
        let names: Vec<&str> = new.extension_names().collect();
        assert_eq!(names, ["citext", "pg_trgm"]);
        let config: Vec<(&str, &str)> = new
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(config, [("max_connections", "50"), ("work_mem", "16MB")]);
        assert_eq!(new.resources.memory, "2Gi");
        assert_eq!(new.resources.cpu, current().resources.cpu);
        assert_eq!(new.storage, current().storage);
    }

    #[test]
    fn update_that_restates_the_spec_changes_nothing() {
        let add = strings(&["hstore"]);
        let remove = strings(&["postgis"]);
        let unset = strings(&["not_set"]);
        let set = [kv("work_mem", "4MB")];
        let new = SpecChange {
            add_extensions: &add,
            remove_extensions: &remove,
            set_config: &set,
            unset_config: &unset,
            ..SpecChange::default()
        }
        .apply(&current())
        .unwrap();
        assert!(domain::diff_specs(&current(), &new).is_empty());
    }

    #[test]
    fn update_rejects_contradictory_flags() {
        let ext = strings(&["hstore"]);
        let err = SpecChange {
            add_extensions: &ext,
            remove_extensions: &ext,
            ..SpecChange::default()
        }
        .apply(&current())
        .unwrap_err();
        assert!(err.0.contains("both added"), "{err}");

        let set = [kv("jit", "off")];
        let unset = strings(&["jit"]);
        let err = SpecChange {
            set_config: &set,
            unset_config: &unset,
            ..SpecChange::default()
        }
        .apply(&current())
        .unwrap_err();
        assert!(err.0.contains("both set"), "{err}");
    }
}
