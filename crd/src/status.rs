//! What the operator reports: phase, conditions, observed spec, connection.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresInstanceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What Postgres runs, as the agent in the pod observes it (read by the
    /// operator on every reconcile); absent until the agent first answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_spec: Option<ObservedSpecStatus>,
    /// When the running server started (`pg_postmaster_start_time()`,
    /// RFC 3339), as the agent in the pod reports it: a new time is a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_started_at: Option<String>,
    /// The `metadata.generation` whose spec the agent in the pod last
    /// converged Postgres to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged_generation: Option<i64>,
    /// How often the agent in the pod started the server again after it
    /// ended on its own (a crash, a kill), since the pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_restarts: Option<u32>,
    /// How the server last ended on its own, as the agent saw it
    /// (`killed by signal 9 (SIGKILL)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_server_exit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// The restart hash of the pod template the last completed rollout ran:
    /// while the StatefulSet's template carries another one, a restart is
    /// pending. Derived from the StatefulSet, so a stale read of this status
    /// can only make the operator more cautious, never lose a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_out_restart_hash: Option<String>,
}

/// Where the instance is in its life: `Provisioning` until its pod is ready
/// the first time, `Running`, `Updating` while a changed spec rolls out,
/// `Stopped`, `Degraded` when something needs attention, `Deleting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Provisioning,
    Running,
    Updating,
    Stopped,
    Degraded,
    Deleting,
}

/// A standard Kubernetes condition (`metav1.Condition`'s shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: ConditionStatus,
    /// CamelCase machine-readable cause.
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339 time of the last change of `status`.
    pub last_transition_time: String,
}

/// The conditions pgplane sets: `Ready` (serving), `Progressing` (converging
/// to a new generation), `PendingRestart` (a change waits for a restart),
/// `Degraded` (failing, see reason).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum ConditionType {
    Ready,
    Progressing,
    PendingRestart,
    Degraded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// What the data plane observes running (mirrors [`domain::ObservedSpec`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedSpecStatus {
    pub postgres_version: String,
    #[serde(default)]
    pub extensions: Vec<String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub running: bool,
    #[serde(default)]
    pub pending_restart: Vec<String>,
    /// Whether the `postgres` role is a superuser, as observed in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_access: Option<bool>,
    /// The installed version of each extension.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extension_versions: BTreeMap<String, String>,
    /// The declared roles that exist, as observed in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<ObservedRoleStatus>>,
    /// The declared databases that exist, as observed in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<ObservedDatabaseStatus>>,
}

/// A declared role as observed (mirrors [`domain::ObservedRole`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedRoleStatus {
    pub name: String,
    pub login: bool,
    pub inherit: bool,
    #[serde(default)]
    pub member_of: Vec<String>,
    pub connection_limit: i32,
}

/// A declared database as observed (mirrors [`domain::ObservedDatabase`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedDatabaseStatus {
    pub name: String,
    pub owner: String,
    #[serde(default)]
    pub extension_versions: BTreeMap<String, String>,
    #[serde(default)]
    pub schemas: Vec<String>,
}

impl From<domain::ObservedRole> for ObservedRoleStatus {
    fn from(r: domain::ObservedRole) -> Self {
        Self {
            name: r.name,
            login: r.login,
            inherit: r.inherit,
            member_of: r.member_of,
            connection_limit: r.connection_limit,
        }
    }
}

impl From<ObservedRoleStatus> for domain::ObservedRole {
    fn from(r: ObservedRoleStatus) -> Self {
        Self {
            name: r.name,
            login: r.login,
            inherit: r.inherit,
            member_of: r.member_of,
            connection_limit: r.connection_limit,
        }
    }
}

impl From<domain::ObservedDatabase> for ObservedDatabaseStatus {
    fn from(d: domain::ObservedDatabase) -> Self {
        Self {
            name: d.name,
            owner: d.owner,
            extension_versions: d.extension_versions,
            schemas: d.schemas,
        }
    }
}

impl From<ObservedDatabaseStatus> for domain::ObservedDatabase {
    fn from(d: ObservedDatabaseStatus) -> Self {
        Self {
            name: d.name,
            owner: d.owner,
            extension_versions: d.extension_versions,
            schemas: d.schemas,
        }
    }
}

/// Where to connect; the password is in the Secret `secretName` (key
/// `password`), never here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub secret_name: String,
}

impl PostgresInstanceStatus {
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: ConditionType) -> bool {
        self.condition(type_)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }
}

impl From<domain::ObservedSpec> for ObservedSpecStatus {
    fn from(o: domain::ObservedSpec) -> Self {
        Self {
            postgres_version: o.postgres_version,
            extensions: o.extensions,
            config: o.config,
            running: o.running,
            pending_restart: o.pending_restart,
            superuser_access: o.superuser_access,
            extension_versions: o.extension_versions,
            roles: o.roles.map(|r| r.into_iter().map(Into::into).collect()),
            databases: o.databases.map(|d| d.into_iter().map(Into::into).collect()),
        }
    }
}

impl From<ObservedSpecStatus> for domain::ObservedSpec {
    fn from(o: ObservedSpecStatus) -> Self {
        Self {
            postgres_version: o.postgres_version,
            extensions: o.extensions,
            config: o.config,
            running: o.running,
            pending_restart: o.pending_restart,
            superuser_access: o.superuser_access,
            archive: None,
            extension_versions: o.extension_versions,
            roles: o.roles.map(|r| r.into_iter().map(Into::into).collect()),
            databases: o.databases.map(|d| d.into_iter().map(Into::into).collect()),
            members: None,
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::PendingRestart => "PendingRestart",
            ConditionType::Degraded => "Degraded",
        })
    }
}
