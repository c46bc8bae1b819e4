//! The desired spec of an instance and what a data plane observes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backup::{ArchiveStatus, BackupPolicy, RestoreSpec};

/// The Postgres major version used when a spec does not name one.
pub const DEFAULT_POSTGRES_VERSION: &str = "15";
pub const DEFAULT_STORAGE: &str = "10Gi";
pub const DEFAULT_CPU: &str = "1";
pub const DEFAULT_MEMORY: &str = "1Gi";

/// What a user declares for one Postgres instance (DESIGN.md §6).
///
/// Unknown fields are rejected; every field has a default, so `{}` is a valid
/// spec. Use [`InstanceSpec::normalized`] before comparing two specs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceSpec {
    #[serde(default = "default_version")]
    pub postgres_version: String,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default = "default_storage")]
    pub storage: String,
    #[serde(default)]
    pub extensions: Vec<Extension>,
    /// postgresql.conf parameters, values as strings. A parameter given
    /// twice is refused.
    #[serde(default, deserialize_with = "config_without_duplicates")]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub stopped: bool,
    /// Whether the instance's `postgres` role is a superuser. Off by default:
    /// the role owns the database but cannot run programs or read the
    /// server's files. Even on, the server runs as an OS user of its own
    /// that reaches nothing outside this instance.
    #[serde(default, skip_serializing_if = "is_false")]
    pub superuser_access: bool,
    /// When full backups are taken and how long they are kept (WAL is
    /// archived continuously regardless).
    #[serde(default, skip_serializing_if = "BackupPolicy::is_default")]
    pub backup: BackupPolicy,
    /// Start as a copy of another instance's data, restored from its
    /// backups. Read only when the instance is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extension {
    pub name: String,
}

/// Reads `config` refusing a key given twice (a plain map keeps the last
/// one silently), naming the key.
fn config_without_duplicates<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct ConfigVisitor;

    impl<'de> serde::de::Visitor<'de> for ConfigVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of parameter names to values")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut config = BTreeMap::new();
            while let Some((name, value)) = map.next_entry::<String, String>()? {
                if config.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "parameter {name:?} is set twice; set each parameter once"
                    )));
                }
                config.insert(name, value);
            }
            Ok(config)
        }
    }

    deserializer.deserialize_map(ConfigVisitor)
}

fn default_version() -> String {
    DEFAULT_POSTGRES_VERSION.to_owned()
}
fn default_replicas() -> u32 {
    1
}
fn default_storage() -> String {
    DEFAULT_STORAGE.to_owned()
}
fn default_cpu() -> String {
    DEFAULT_CPU.to_owned()
}
fn default_memory() -> String {
    DEFAULT_MEMORY.to_owned()
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu: default_cpu(),
            memory: default_memory(),
        }
    }
}

impl Default for InstanceSpec {
    fn default() -> Self {
        Self {
            postgres_version: default_version(),
            replicas: default_replicas(),
            resources: Resources::default(),
            storage: default_storage(),
            extensions: Vec::new(),
            config: BTreeMap::new(),
            stopped: false,
            superuser_access: false,
            backup: BackupPolicy::default(),
            restore: None,
        }
    }
}

impl InstanceSpec {
    /// The canonical form: extensions sorted and de-duplicated, so two specs
    /// that mean the same thing compare equal.
    pub fn normalized(mut self) -> Self {
        self.extensions.sort();
        self.extensions.dedup();
        self
    }

    pub fn extension_names(&self) -> impl Iterator<Item = &str> {
        self.extensions.iter().map(|e| e.name.as_str())
    }

    pub fn has_extension(&self, name: &str) -> bool {
        self.extension_names().any(|n| n == name)
    }
}

/// What the data plane reports it actually runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ObservedSpec {
    pub postgres_version: String,
    /// Installed extensions (`pg_extension`, without `plpgsql`), sorted.
    pub extensions: Vec<String>,
    /// Current values (`current_setting`) of the parameters the spec declares.
    pub config: BTreeMap<String, String>,
    /// Whether the server is running.
    pub running: bool,
    /// Parameters changed but waiting for a restart (`pg_settings.pending_restart`).
    #[serde(default)]
    pub pending_restart: Vec<String>,
    /// Whether the client role is a superuser (`pg_roles.rolsuper`); absent
    /// when the data plane does not observe it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_access: Option<bool>,
    /// The WAL archive's health; absent when the data plane does not
    /// archive (or the server is not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveStatus>,
}

/// Where to connect. The password never travels with this: it lives in the
/// secret store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_the_default_spec() {
        let spec: InstanceSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec, InstanceSpec::default());
        assert_eq!(spec.postgres_version, "15");
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = serde_json::from_str::<InstanceSpec>(r#"{"replica": 2}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `replica`"), "{err}");
    }

    #[test]
    fn a_parameter_given_twice_is_refused_by_name() {
        let err = serde_json::from_str::<InstanceSpec>(
            r#"{"config": {"work_mem": "1MB", "work_mem": "2MB"}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("parameter \"work_mem\" is set twice; set each parameter once"),
            "{err}"
        );
        let spec: InstanceSpec =
            serde_json::from_str(r#"{"config": {"work_mem": "1MB", "WORK_MEM": "2MB"}}"#).unwrap();
        assert_eq!(
            spec.config.len(),
            2,
            "case-insensitive repeats are validate_spec's"
        );
        assert!(serde_json::from_str::<InstanceSpec>(r#"{"config": null}"#).is_err());
    }

    #[test]
    fn normalized_makes_extension_order_irrelevant() {
        let a = InstanceSpec {
            extensions: vec![ext("hstore"), ext("citext"), ext("hstore")],
            ..Default::default()
        };
        let b = InstanceSpec {
            extensions: vec![ext("citext"), ext("hstore")],
            ..Default::default()
        };
        assert_eq!(a.normalized(), b.normalized());
    }

    fn ext(n: &str) -> Extension {
        Extension { name: n.into() }
    }
}
