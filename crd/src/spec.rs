//! The desired spec: DESIGN.md §6, as the CRD's `spec`.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the
// repeated `type_ = "string"` inside them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::PostgresInstanceStatus;

/// Longest `PostgresInstance` name: a StatefulSet's `controller-revision-hash`
/// label is the name plus an 11-character suffix, and labels hold 63.
pub const MAX_NAME_LEN: usize = 52;

/// One PostgreSQL instance managed by pgplane.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "pgplane.io",
    version = "v1",
    kind = "PostgresInstance",
    plural = "postgresinstances",
    shortname = "pginstances",
    shortname = "pgi",
    category = "pgplane",
    doc = "A PostgreSQL instance managed by pgplane (DESIGN.md §6).",
    namespaced,
    status = "PostgresInstanceStatus",
    derive = "PartialEq",
    validation = Rule::new("size(self.metadata.name) <= 52").message(
        "metadata.name must be at most 52 characters: the StatefulSet's revision label appends 11 to it and labels hold 63"
    ),
    printcolumn(name = "State", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.postgresVersion"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresInstanceSpec {
    /// PostgreSQL major version.
    #[serde(default = "default_version")]
    #[schemars(extend("enum" = ["15"]))]
    pub postgres_version: String,
    /// Number of Postgres servers; the operator runs one (standbys are
    /// built by the local data plane).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1))]
    pub replicas: u32,
    /// CPU and memory requested for the Postgres container.
    #[serde(default)]
    pub resources: ResourceRequests,
    /// Size of the data volume.
    #[serde(default = "default_storage")]
    #[schemars(regex(pattern = domain::quantity::BYTES_PATTERN))]
    pub storage: String,
    /// Extensions to install (`CREATE EXTENSION`); preload libraries follow.
    #[serde(default)]
    pub extensions: Vec<ExtensionRef>,
    /// postgresql.conf parameters, values as strings.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Whether the server should be stopped (the volume is kept).
    #[serde(default)]
    pub stopped: bool,
    /// Whether the `postgres` role is a superuser (off: it owns the
    /// database, nothing more).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superuser_access: bool,
    /// Changing this value restarts the server (a rolling restart of its
    /// pod); any string, e.g. a timestamp. The conductor sets it for a
    /// `pgplane instance restart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_request: Option<String>,
    /// Changing this value makes the agent in the pod converge the server
    /// to the spec again, putting back what was changed behind pgplane's
    /// back (`ALTER SYSTEM`), without a restart unless one is then pending;
    /// any string. The conductor sets it for every update, so that a
    /// `pgplane instance heal` (an update that changes nothing) heals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converge_request: Option<String>,
    /// Databases besides `postgres`; those not listed are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseRef>,
    /// Roles besides `postgres`; those not listed are left alone. The
    /// operator generates each present role's password once and keeps it
    /// in the Secret `NAME-roles`, one key per role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleRef>,
}

/// A database inside the instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRef {
    #[schemars(regex(pattern = IDENTIFIER_PATTERN))]
    pub name: String,
    /// A declared role or `postgres`.
    #[serde(default = "default_owner")]
    #[schemars(regex(pattern = IDENTIFIER_PATTERN))]
    pub owner: String,
    /// Created inside this database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionRef>,
    /// Created in this database, owned by its owner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    /// `absent` drops the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["present", "absent"]))]
    pub ensure: Option<String>,
}

/// A role inside the instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    #[schemars(regex(pattern = IDENTIFIER_PATTERN))]
    pub name: String,
    #[serde(default = "yes")]
    pub login: bool,
    #[serde(default = "yes")]
    pub inherit: bool,
    /// Declared roles, `postgres`, or grantable predefined roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
    /// `-1`: no limit.
    #[serde(default = "no_limit")]
    #[schemars(range(min = -1))]
    pub connection_limit: i32,
    /// `absent` drops the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["present", "absent"]))]
    pub ensure: Option<String>,
}

/// Role, database and schema names (checked fully by the control plane).
const IDENTIFIER_PATTERN: &str = r"^[a-z_][a-z0-9_]{0,62}$";

fn default_owner() -> String {
    domain::inside::CLIENT_ROLE.to_owned()
}
fn yes() -> bool {
    true
}
fn no_limit() -> i32 {
    -1
}

fn ensure_to_crd(e: domain::Ensure) -> Option<String> {
    (e == domain::Ensure::Absent).then(|| "absent".to_owned())
}

fn ensure_from_crd(e: Option<&str>) -> domain::Ensure {
    match e {
        Some("absent") => domain::Ensure::Absent,
        _ => domain::Ensure::Present,
    }
}

impl From<domain::Extension> for ExtensionRef {
    fn from(e: domain::Extension) -> Self {
        ExtensionRef {
            name: e.name,
            version: e.version,
            ensure: ensure_to_crd(e.ensure),
        }
    }
}

impl From<ExtensionRef> for domain::Extension {
    fn from(e: ExtensionRef) -> Self {
        domain::Extension {
            name: e.name,
            version: e.version,
            ensure: ensure_from_crd(e.ensure.as_deref()),
        }
    }
}

impl From<domain::Database> for DatabaseRef {
    fn from(d: domain::Database) -> Self {
        DatabaseRef {
            name: d.name,
            owner: d.owner,
            extensions: d.extensions.into_iter().map(Into::into).collect(),
            schemas: d.schemas,
            ensure: ensure_to_crd(d.ensure),
        }
    }
}

impl From<DatabaseRef> for domain::Database {
    fn from(d: DatabaseRef) -> Self {
        domain::Database {
            name: d.name,
            owner: d.owner,
            extensions: d.extensions.into_iter().map(Into::into).collect(),
            schemas: d.schemas,
            ensure: ensure_from_crd(d.ensure.as_deref()),
        }
    }
}

impl From<domain::Role> for RoleRef {
    fn from(r: domain::Role) -> Self {
        RoleRef {
            name: r.name,
            login: r.login,
            inherit: r.inherit,
            member_of: r.member_of,
            connection_limit: r.connection_limit,
            ensure: ensure_to_crd(r.ensure),
        }
    }
}

impl From<RoleRef> for domain::Role {
    fn from(r: RoleRef) -> Self {
        domain::Role {
            name: r.name,
            login: r.login,
            inherit: r.inherit,
            member_of: r.member_of,
            connection_limit: r.connection_limit,
            ensure: ensure_from_crd(r.ensure.as_deref()),
        }
    }
}

/// The Secret holding the passwords of an instance's declared roles, one
/// key per present role, named after the role (role names are valid keys).
/// One Secret, not one per role, so that it is mounted once and a role
/// added later reaches the pod without changing its template.
pub fn roles_secret_name(instance: &str) -> String {
    format!("{instance}-roles")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequests {
    #[serde(default = "default_cpu")]
    #[schemars(regex(pattern = domain::quantity::CPU_PATTERN))]
    pub cpu: String,
    #[serde(default = "default_memory")]
    #[schemars(regex(pattern = domain::quantity::BYTES_PATTERN))]
    pub memory: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRef {
    /// Extension name as in `CREATE EXTENSION`.
    #[schemars(regex(pattern = r"^[a-z0-9_-]{1,63}$"))]
    pub name: String,
    /// Version to install or update to (`ALTER EXTENSION … UPDATE TO`);
    /// absent: the default version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._]+(-[A-Za-z0-9._]+)*$"))]
    pub version: Option<String>,
    /// `absent` drops the extension; one no longer listed is left installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["present", "absent"]))]
    pub ensure: Option<String>,
}

fn default_version() -> String {
    domain::spec::DEFAULT_POSTGRES_VERSION.to_owned()
}
fn default_replicas() -> u32 {
    1
}
fn default_storage() -> String {
    domain::spec::DEFAULT_STORAGE.to_owned()
}
fn default_cpu() -> String {
    domain::spec::DEFAULT_CPU.to_owned()
}
fn default_memory() -> String {
    domain::spec::DEFAULT_MEMORY.to_owned()
}

impl Default for ResourceRequests {
    fn default() -> Self {
        domain::Resources::default().into()
    }
}

impl Default for PostgresInstanceSpec {
    fn default() -> Self {
        domain::InstanceSpec::default().into()
    }
}

impl From<domain::InstanceSpec> for PostgresInstanceSpec {
    fn from(s: domain::InstanceSpec) -> Self {
        Self {
            postgres_version: s.postgres_version,
            replicas: s.replicas,
            resources: s.resources.into(),
            storage: s.storage,
            extensions: s.extensions.into_iter().map(Into::into).collect(),
            config: s.config,
            stopped: s.stopped,
            superuser_access: s.superuser_access,
            restart_request: None,
            converge_request: None,
            databases: s.databases.into_iter().map(Into::into).collect(),
            roles: s.roles.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<PostgresInstanceSpec> for domain::InstanceSpec {
    fn from(s: PostgresInstanceSpec) -> Self {
        Self {
            postgres_version: s.postgres_version,
            replicas: s.replicas,
            // The operator runs one server: nothing to replicate to.
            synchronous: domain::Synchronous::Off,
            resources: s.resources.into(),
            storage: s.storage,
            extensions: s.extensions.into_iter().map(Into::into).collect(),
            config: s.config,
            stopped: s.stopped,
            superuser_access: s.superuser_access,
            // Backups are not carried by the custom resource yet: the
            // Kubernetes data plane does not take them.
            backup: domain::BackupPolicy::default(),
            restore: None,
            databases: s.databases.into_iter().map(Into::into).collect(),
            roles: s.roles.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<domain::Resources> for ResourceRequests {
    fn from(r: domain::Resources) -> Self {
        Self {
            cpu: r.cpu,
            memory: r.memory,
        }
    }
}

impl From<ResourceRequests> for domain::Resources {
    fn from(r: ResourceRequests) -> Self {
        Self {
            cpu: r.cpu,
            memory: r.memory,
        }
    }
}
