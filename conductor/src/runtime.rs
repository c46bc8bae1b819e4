//! What a data plane runs instances on.

use async_trait::async_trait;
use domain::{Activity, BackupCatalog, ConnectionInfo, DataPlaneEvent, ObservedSpec, ReportKind};
use uuid::Uuid;

/// The result of applying one event.
#[derive(Debug, Clone)]
pub struct Applied {
    pub report: ReportKind,
    pub observed: Option<ObservedSpec>,
    pub connection: Option<ConnectionInfo>,
    /// Whether Postgres was restarted to apply the event.
    pub restarted: bool,
    /// A password to put in the secret store (new instances only).
    pub password: Option<String>,
    /// The passwords of the spec's declared roles (role → password), to
    /// make the secret store's set; `None`: the runtime does not keep them.
    pub role_passwords: Option<std::collections::BTreeMap<String, String>>,
    /// The instance's backups, when the runtime read them (e.g. the final
    /// catalog of a deleted instance, whose backups outlive it).
    pub backups: Option<BackupCatalog>,
    /// What the runtime did on the way, for the history (e.g. how a rolling
    /// restart went). Never contains secrets.
    pub note: Option<String>,
}

/// A backup that finished.
#[derive(Debug, Clone)]
pub struct BackupDone {
    /// The generation last applied.
    pub generation: i64,
    /// For the history: what was taken, how big, how long.
    pub note: String,
    pub catalog: BackupCatalog,
}

/// A switchover that finished: another member is the primary.
#[derive(Debug, Clone)]
pub struct SwitchedOver {
    /// The generation last applied.
    pub generation: i64,
    /// For the history: which members, and how long writes were refused.
    pub note: String,
    pub observed: ObservedSpec,
    pub connection: ConnectionInfo,
}

/// A periodic re-observation of one instance.
#[derive(Debug, Clone)]
pub struct Observation {
    pub instance_id: Uuid,
    /// The generation last applied.
    pub generation: i64,
    pub observed: ObservedSpec,
    /// What the server was doing, when the runtime samples it.
    pub activity: Option<Activity>,
    /// What the server's log gained since the last observation (whole
    /// lines), when the runtime reads it.
    pub log: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The instance could not be converged; the reason is shown to users.
    #[error("{0}")]
    Apply(String),
    /// The change is applied but the data plane has not converged to it
    /// yet (e.g. pods not ready within the runtime's wait): the event is
    /// redelivered after the visibility timeout and waited for again, until
    /// it completes or its deliveries run out (then the instance fails with
    /// the dead-letter reason).
    #[error("not converged yet: {0}")]
    NotConverged(String),
    #[error(transparent)]
    Agent(#[from] agent::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What supervision did for one instance.
#[derive(Debug, Clone)]
pub struct Supervised {
    pub instance_id: Uuid,
    /// The generation last applied.
    pub generation: i64,
    pub outcome: Supervision,
}

#[derive(Debug, Clone)]
pub enum Supervision {
    /// The server had stopped by itself and runs again; the note says how
    /// it ended and how long the restart took.
    Restarted {
        note: String,
        observed: Box<ObservedSpec>,
    },
    /// The primary was gone and a standby was promoted; the note names the
    /// members and how long the primary was unreachable.
    FailedOver {
        note: String,
        observed: Box<ObservedSpec>,
        connection: ConnectionInfo,
    },
    /// The server keeps crashing; it is left stopped.
    GaveUp { reason: String },
}

/// Turns events into running instances. Implementations are idempotent:
/// applying a generation they already applied only re-reports it.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `local`, `simulated`, `kubernetes`.
    fn kind(&self) -> &'static str;
    async fn available_extensions(&self) -> Result<Vec<String>, RuntimeError>;
    /// What the data plane registers: the extensions it can install with
    /// their versions, preload libraries and requirements. By default,
    /// entries known by name only.
    async fn extension_catalog(&self) -> Result<Vec<domain::AvailableExtension>, RuntimeError> {
        Ok(self
            .available_extensions()
            .await?
            .iter()
            .map(|n| domain::AvailableExtension::named(n))
            .collect())
    }
    async fn apply(&self, event: &DataPlaneEvent) -> Result<Applied, RuntimeError>;
    async fn observe_all(&self) -> Vec<Observation>;
    /// Restarts servers that should run and stopped by themselves. Runtimes
    /// whose platform restarts them (Kubernetes) do nothing here.
    async fn supervise(&self) -> Vec<Supervised> {
        Vec::new()
    }
    /// Takes a full backup of one instance now. The error is shown to
    /// users; a failed backup changes nothing else.
    async fn backup(&self, instance_id: Uuid) -> Result<BackupDone, RuntimeError> {
        let _ = instance_id;
        Err(RuntimeError::Apply(format!(
            "the {} data plane does not take backups",
            self.kind()
        )))
    }
    /// Makes a standby of one instance its primary without losing a
    /// commit: `to` (a member index) or the most advanced standby. The
    /// error is shown to users; a refused switchover changes nothing.
    async fn switchover(
        &self,
        instance_id: Uuid,
        to: Option<u32>,
    ) -> Result<SwitchedOver, RuntimeError> {
        let _ = (instance_id, to);
        Err(RuntimeError::Apply(format!(
            "the {} data plane does not switch over",
            self.kind()
        )))
    }
    /// Instances whose scheduled backup is due (and housekeeping such as
    /// removing the backups of instances deleted longer ago than their
    /// retention).
    async fn due_backups(&self) -> Vec<Uuid> {
        Vec::new()
    }
}

/// The report kind for a non-delete event, from what actually happened.
pub fn report_kind(
    event: domain::EventKind,
    created: bool,
    started: bool,
    stopped: bool,
    restarted: bool,
) -> ReportKind {
    use domain::EventKind as K;
    // What is true now decides: a new instance whose spec says stopped is
    // Stopped, not Created.
    if event == K::Delete {
        ReportKind::Deleted
    } else if stopped {
        ReportKind::Stopped
    } else if created {
        ReportKind::Created
    } else if started || event == K::Start {
        ReportKind::Started
    } else if restarted || event == K::Restart {
        ReportKind::Restarted
    } else {
        ReportKind::Updated
    }
}
