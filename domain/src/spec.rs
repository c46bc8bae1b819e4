//! The desired spec of an instance and what a data plane observes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backup::{ArchiveStatus, BackupPolicy, RestoreSpec};
use crate::inside::{Database, ObservedDatabase, ObservedRole, Role};
use crate::synchronous::Synchronous;

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
    /// `off`, `on`, or how many standbys confirm each commit before it is
    /// acknowledged (see [`Synchronous`]).
    #[serde(default, skip_serializing_if = "Synchronous::is_off")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "on"))]
    pub synchronous: Synchronous,
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
    /// Databases inside the instance, besides `postgres`. Databases the
    /// spec does not name are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<Database>,
    /// Roles inside the instance, besides the client role `postgres`.
    /// Roles the spec does not name are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
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
    /// The version to install (`CREATE EXTENSION … VERSION`) or update to
    /// (`ALTER EXTENSION … UPDATE TO`); absent: the default version when
    /// created, and whatever is installed afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `present` (the default) creates it; `absent` drops it. An extension
    /// the spec no longer names is left installed.
    #[serde(default, skip_serializing_if = "Ensure::is_present")]
    pub ensure: Ensure,
}

impl Extension {
    /// The extension at its default version.
    pub fn new(name: impl Into<String>) -> Extension {
        Extension {
            name: name.into(),
            version: None,
            ensure: Ensure::Present,
        }
    }

    /// Reads `name` or `name=version` (the CLI's and Terraform's spelling).
    pub fn parse(text: &str) -> Extension {
        match text.split_once('=') {
            Some((name, version)) => Extension {
                version: Some(version.trim().to_owned()),
                ..Extension::new(name.trim())
            },
            None => Extension::new(text.trim()),
        }
    }

    /// `name`, `name=version`, or `name (absent)`: how lists show it.
    pub fn display(&self) -> String {
        match (&self.version, self.ensure) {
            (_, Ensure::Absent) => format!("{} (absent)", self.name),
            (Some(v), Ensure::Present) => format!("{}={v}", self.name),
            (None, Ensure::Present) => self.name.clone(),
        }
    }
}

/// Whether a declared extension is to be installed or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Ensure {
    #[default]
    Present,
    Absent,
}

impl Ensure {
    pub fn is_present(&self) -> bool {
        *self == Ensure::Present
    }
}

/// Read from a string, so every format (JSON, the manifests' YAML) reads
/// it alike and a wrong value is named.
impl<'de> Deserialize<'de> for Ensure {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnsureVisitor;

        impl serde::de::Visitor<'_> for EnsureVisitor {
            type Value = Ensure;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"present\" or \"absent\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Ensure, E> {
                match text {
                    "present" => Ok(Ensure::Present),
                    "absent" => Ok(Ensure::Absent),
                    other => Err(E::custom(format!(
                        "{other:?} is not an ensure value; use \"present\" or \"absent\""
                    ))),
                }
            }
        }

        deserializer.deserialize_str(EnsureVisitor)
    }
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
            synchronous: Synchronous::Off,
            resources: Resources::default(),
            storage: default_storage(),
            extensions: Vec::new(),
            config: BTreeMap::new(),
            stopped: false,
            superuser_access: false,
            backup: BackupPolicy::default(),
            restore: None,
            databases: Vec::new(),
            roles: Vec::new(),
        }
    }
}

impl InstanceSpec {
    /// The canonical form: extensions, databases and roles (and their
    /// lists) sorted and de-duplicated, so two specs that mean the same
    /// thing compare equal.
    pub fn normalized(mut self) -> Self {
        self.extensions.sort();
        self.extensions.dedup();
        crate::inside::normalize(&mut self);
        self
    }

    /// Every extension the spec declares, with the database it goes into
    /// (`None`: the `postgres` database).
    pub fn all_extensions(&self) -> impl Iterator<Item = (Option<&str>, &Extension)> {
        self.extensions.iter().map(|e| (None, e)).chain(
            self.databases
                .iter()
                .flat_map(|d| d.extensions.iter().map(move |e| (Some(d.name.as_str()), e))),
        )
    }

    /// The extensions the spec wants installed (not those declared absent).
    pub fn extension_names(&self) -> impl Iterator<Item = &str> {
        self.extensions
            .iter()
            .filter(|e| e.ensure == Ensure::Present)
            .map(|e| e.name.as_str())
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
    /// The installed version of each extension (`pg_extension.extversion`);
    /// an extension missing here has no observed version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extension_versions: BTreeMap<String, String>,
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
    /// The declared roles that exist (`pg_roles`); absent when the data
    /// plane does not observe roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<ObservedRole>>,
    /// The declared databases that exist; absent when the data plane does
    /// not observe databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<ObservedDatabase>>,
    /// The instance's servers, the primary first; absent when the data
    /// plane runs it as one server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<ObservedMember>>,
}

/// What one member of an instance is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ObservedMember {
    /// `member-0`, `member-1`, …: stable for the member's life.
    pub name: String,
    pub role: MemberRole,
    pub running: bool,
    /// The WAL timeline it is on (it grows with every promotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// The primary's current WAL position, or how far a standby replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// Bytes of WAL a standby has still to replay, as the primary sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// A standby's replication state as the primary sees it (`streaming`,
    /// `catchup`, …), or absent when it is not connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Accepts writes.
    Primary,
    /// Streams the primary's WAL and serves reads.
    Standby,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Primary => "primary",
            MemberRole::Standby => "standby",
        }
    }
}

/// Where to connect. The password never travels with this: it lives in the
/// secret store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    /// The primary's address when it was reported.
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Every member's address, the primary first, for a client to find the
    /// current primary (or a standby) itself; absent for one server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberAddress>,
}

/// Where one member listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberAddress {
    pub host: String,
    pub port: u16,
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
        Extension::new(n)
    }

    #[test]
    fn extensions_read_with_version_and_ensure() {
        let spec: InstanceSpec = serde_json::from_str(
            r#"{"extensions": [{"name": "postgis", "version": "3.3.2"}, {"name": "hstore", "ensure": "absent"}]}"#,
        )
        .unwrap();
        assert_eq!(spec.extensions[0].version.as_deref(), Some("3.3.2"));
        assert_eq!(spec.extensions[1].ensure, Ensure::Absent);
        assert_eq!(spec.extension_names().collect::<Vec<_>>(), ["postgis"]);
        let back = serde_json::to_string(&spec.extensions).unwrap();
        assert_eq!(
            back,
            r#"[{"name":"postgis","version":"3.3.2"},{"name":"hstore","ensure":"absent"}]"#
        );
        let err = serde_json::from_str::<InstanceSpec>(
            r#"{"extensions": [{"name": "hstore", "ensure": "gone"}]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("\"gone\" is not an ensure value; use \"present\" or \"absent\""),
            "{err}"
        );
    }
}
