//! Request and response bodies.

use chrono::{DateTime, Utc};
use domain::{
    ArchiveStatus, BackupCatalog, BackupInfo, ConnectionInfo, FieldError, InstanceSpec,
    ObservedSpec, State,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::vocabulary::{ErrorCode, HistoryEvent, SyncAction, SyncOutcome};

/// `POST /api/v1/instances`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInstance {
    /// DNS-1123 label, unique in the organisation.
    pub name: String,
    #[serde(default)]
    pub spec: InstanceSpec,
    /// Which data plane runs it; the control plane's default when absent.
    #[serde(default)]
    pub data_plane: Option<String>,
    /// Who manages the instance: `api` (default) or `terraform`
    /// ([`CLIENT_OWNERS`]). Instances owned by a GitOps source
    /// (`git:<source>`) are created by that source only.
    #[serde(default)]
    pub owner: Option<String>,
}

/// The owners a client may give an instance it creates.
pub const CLIENT_OWNERS: [&str; 2] = ["api", "terraform"];

/// Request header naming the client that acts, one of [`CLIENT_OWNERS`]
/// (`api` when absent). An instance changes only through its owner:
/// the Terraform provider sends `terraform`.
pub const OWNER_HEADER: &str = "pgplane-owner";

/// Request header (`true`) that lets a client change an instance another
/// client owns (`--override-owner` in the CLI). Instances a GitOps source
/// owns change only through that source.
pub const OVERRIDE_OWNER_HEADER: &str = "pgplane-override-owner";

/// `PUT /api/v1/instances/{name}`: replaces the desired spec.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateInstance {
    pub spec: InstanceSpec,
    /// Only apply if the instance is still at this generation (optimistic concurrency).
    #[serde(default)]
    pub expected_generation: Option<i64>,
    /// Hand the instance to this client owner (`api` or `terraform`), as
    /// `terraform import` does; its current owner may, others only with
    /// the override header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `POST /api/v1/instances/{name}/switchover`: makes a standby the
/// primary without losing a commit. The body may be empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Switchover {
    /// The standby to promote (`member-N`, as `observed.members` names
    /// them); without it, the one that has received the most WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// An instance as the control plane knows it: desired, observed, and state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: Uuid,
    pub org: String,
    pub name: String,
    pub data_plane: String,
    pub owner: String,
    pub state: State,
    /// Bumped by every accepted command.
    pub generation: i64,
    /// The generation the data plane last reported on.
    pub observed_generation: i64,
    pub spec: InstanceSpec,
    pub observed: Option<ObservedSpec>,
    pub observed_at: Option<DateTime<Utc>>,
    pub connection: Option<ConnectionInfo>,
    /// Why the instance is in `Error`.
    pub error: Option<String>,
    /// Why the last accepted update will restart Postgres (empty: it will not).
    #[serde(default)]
    pub restart_reasons: Vec<String>,
    /// Its backups, once the data plane has reported any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSummary>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An instance's backups at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    pub count: usize,
    pub last: Option<BackupInfo>,
    /// The earliest point a restore can reach.
    pub restorable_from: Option<DateTime<Utc>>,
    /// The latest; absent while the instance runs (then: up to now).
    pub restorable_until: Option<DateTime<Utc>>,
}

impl BackupSummary {
    /// `live`: the instance still runs and archives.
    pub fn of(catalog: &BackupCatalog, live: bool) -> BackupSummary {
        BackupSummary {
            count: catalog.backups.len(),
            last: catalog.backups.last().cloned(),
            restorable_from: catalog.restorable_from(),
            restorable_until: match live {
                true => None,
                false => catalog.restorable_until,
            },
        }
    }
}

/// `GET /api/v1/instances/{name}/backups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupList {
    /// Oldest first.
    pub items: Vec<BackupInfo>,
    pub restorable_from: Option<DateTime<Utc>>,
    /// Absent while the instance runs (then: up to now).
    pub restorable_until: Option<DateTime<Utc>>,
    /// How WAL archiving is doing, as last observed.
    pub archive: Option<ArchiveStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceList {
    pub items: Vec<Instance>,
}

/// One entry of an instance's state timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub from: Option<State>,
    pub event: HistoryEvent,
    pub to: State,
    pub generation: i64,
    pub actor: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub items: Vec<HistoryEntry>,
}

/// `GET /api/v1/extensions`: what one data plane can install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionCatalog {
    pub data_plane: String,
    /// Whether the data plane has registered; an unregistered one lists
    /// nothing and refuses no extension yet.
    pub registered: bool,
    /// Sorted by name.
    pub items: Vec<domain::AvailableExtension>,
}

/// `GET /api/v1/status`: who the token is and how the control plane is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The control plane's version.
    pub version: String,
    /// The token's organisation.
    pub org: String,
    /// Whether the token is an admin token.
    pub admin: bool,
    /// The data planes that registered, and when each last did.
    pub data_planes: Vec<DataPlaneSeen>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneSeen {
    pub name: String,
    pub last_seen: DateTime<Utc>,
}

/// One sample of a running instance's activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivitySample {
    pub at: DateTime<Utc>,
    /// Client connections.
    pub connections: i64,
    /// Transactions since the server's statistics were reset (cumulative).
    pub transactions: i64,
    /// Transactions per second since the sample before; absent for the
    /// first sample and after the counter was reset.
    pub transactions_per_second: Option<f64>,
    /// The size of the instance's databases, in bytes.
    pub database_bytes: i64,
}

/// `GET /api/v1/instances/{name}/activity`: the newest samples, oldest
/// first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityList {
    pub items: Vec<ActivitySample>,
}

/// `GET /api/v1/instances/{name}/logs`: the newest lines of the server's
/// log, oldest first, as its data plane shipped them at each
/// re-observation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogLines {
    pub items: Vec<LogLine>,
    /// Pass as `after` to get only the lines shipped since (what
    /// `pgplane instance logs -f` does); absent before the first lines.
    pub cursor: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// When the data plane shipped the line (it was written shortly before).
    pub shipped_at: DateTime<Utc>,
    pub line: String,
}

/// `GET /api/v1/instances/{name}/credentials`. Sensitive.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
    /// `postgres://user:password@host:port/database`: the primary when the
    /// credentials were read.
    pub uri: String,
    /// A URI that reaches the primary wherever it is (every member listed,
    /// `target_session_attrs=read-write`); the same as `uri` for one server.
    #[serde(default)]
    pub read_write_uri: String,
    /// A URI that prefers a standby (`target_session_attrs=prefer-standby`);
    /// the same as `uri` for one server.
    #[serde(default)]
    pub read_only_uri: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// `POST /api/v1/tokens` (admin tokens only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateToken {
    pub org: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub description: Option<String>,
    /// Unique within the organisation (DNS-1123 label); the history names
    /// the token by it.
    #[serde(default)]
    pub name: Option<String>,
    /// After this the token is refused (and its console sessions end).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    pub org: String,
    /// Shown once; only its hash is stored.
    pub token: String,
    #[serde(default)]
    pub id: Option<Uuid>,
}

/// A token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: Uuid,
    pub org: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether `expires_at` has passed.
    pub expired: bool,
}

/// `GET /api/v1/tokens` (admin tokens only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenList {
    pub items: Vec<TokenInfo>,
}

/// Every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Machine-readable; a client should expect values it does not know.
    pub code: ErrorCode,
    pub message: String,
    /// For `invalid`: each field that failed, with its path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

/// Whether an instance's data plane reports what its source declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DriftStatus {
    /// Observed at the current generation and equal to the declaration.
    InSync,
    /// Observed at the current generation and different: see `fields`.
    Drifted,
    /// A change is still being applied; drift is not judged mid-change.
    Converging,
    /// The data plane has not reported an observation yet.
    Unobserved,
}

/// One instance in `GET /api/v1/drift`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDrift {
    pub id: Uuid,
    pub name: String,
    /// The source that declares it: `api`, `terraform`, `git:<source>`.
    pub owner: String,
    pub state: State,
    pub status: DriftStatus,
    pub generation: i64,
    pub observed_generation: i64,
    pub observed_at: Option<DateTime<Utc>>,
    /// Seconds since the observation, when there is one.
    pub observation_age_seconds: Option<i64>,
    pub fields: Vec<domain::FieldDrift>,
}

/// `GET /api/v1/drift`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    pub items: Vec<InstanceDrift>,
    /// How many instances drifted.
    pub drifted: usize,
}

/// What a source does when an instance drifts from its declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Record and show drift (default).
    #[default]
    Report,
    /// Re-send the desired spec.
    Heal,
}

/// `POST /api/v1/sources`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSource {
    /// Unique in the organisation; instances it manages are owned by `git:<name>`.
    pub name: String,
    /// An `https://`, `ssh://`, `git://` or `user@host:path` git URL. Local
    /// paths and `file://`, and hosts resolving to non-public addresses,
    /// only where the control plane's operator allows them.
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Directory inside the repository; empty for its root.
    #[serde(default)]
    pub path: String,
    /// Seconds between fetches, at least [`MIN_SOURCE_INTERVAL_SECONDS`].
    #[serde(default = "default_interval")]
    pub interval_seconds: i32,
    /// Delete instances no longer declared (otherwise they are reported as orphans).
    #[serde(default)]
    pub prune: bool,
    #[serde(default)]
    pub drift: DriftMode,
    /// Take over instances declared here that another owner manages.
    #[serde(default)]
    pub adopt: bool,
    /// Key for the push webhook's `X-Hub-Signature-256` HMAC; generated
    /// (and returned once, in the creating response) when absent.
    #[serde(default)]
    pub webhook_secret: Option<WebhookSecret>,
    /// Fetch the branch before registering the source, refusing one that
    /// cannot be read or lacks the branch or the path (`false` registers a
    /// repository that does not exist yet).
    #[serde(default = "default_true")]
    pub verify: bool,
}

fn default_true() -> bool {
    true
}

/// A push webhook's HMAC key (redacted in `Debug`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// The shortest interval between a source's scheduled fetches.
pub const MIN_SOURCE_INTERVAL_SECONDS: i32 = 10;

fn default_branch() -> String {
    "main".to_owned()
}

fn default_interval() -> i32 {
    60
}

/// A source as the control plane knows it (its webhook secret is shown
/// only when the control plane generated it, in the creating response).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub name: String,
    pub org: String,
    pub url: String,
    pub branch: String,
    pub path: String,
    pub interval_seconds: i32,
    pub prune: bool,
    pub drift: DriftMode,
    pub adopt: bool,
    /// Where the push webhook is posted, under the control plane's
    /// endpoint: `/api/v1/orgs/<org>/sources/<name>/webhook`.
    pub webhook_path: String,
    /// The generated webhook secret: only in the response that created the
    /// source without one. Every webhook call must be signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<WebhookSecret>,
    /// The commit whose manifests are in force.
    pub last_good_commit: Option<String>,
    pub last_seen_commit: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    /// The outcome of the newest recorded sync; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<SyncOutcome>,
    /// That sync's first error, if it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceList {
    pub items: Vec<Source>,
}

/// What one sync did to one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncResult {
    pub name: String,
    pub action: SyncAction,
    /// Field changes or the reason, in words.
    pub detail: Option<String>,
    /// Whether Postgres restarts for it.
    pub restart: bool,
    pub error: Option<String>,
}

/// One sync of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub commit: Option<String>,
    pub author: Option<String>,
    pub message: Option<String>,
    pub commit_time: Option<DateTime<Utc>>,
    pub outcome: SyncOutcome,
    /// For `rejected`: every problem, `file:line:col: path: message`.
    pub errors: Vec<String>,
    pub results: Vec<SyncResult>,
    pub at: DateTime<Utc>,
}

/// `GET /api/v1/sources/{name}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub source: Source,
    /// Newest first.
    pub syncs: Vec<SyncRecord>,
}
