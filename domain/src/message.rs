//! Messages on the queues between the control plane and data planes (DESIGN.md §5).
//!
//! Control → data carries the **full desired spec**, never a diff, so any one
//! message is enough to converge. Data → control carries what was observed;
//! passwords never travel on a queue.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::backup::{BackupCatalog, RestoreTarget};
use crate::spec::{ConnectionInfo, InstanceSpec, ObservedSpec};
use crate::state::Event;

/// The command a data-plane event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Create,
    Update,
    Restart,
    Stop,
    Start,
    Delete,
    /// Take a full backup now (a request, not a change of state).
    Backup,
    /// Make a standby the primary, losing nothing (a request, not a change
    /// of state): `switchover_to` names it, or the data plane picks the
    /// most advanced one.
    Switchover,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Create,
        EventKind::Update,
        EventKind::Restart,
        EventKind::Stop,
        EventKind::Start,
        EventKind::Delete,
        EventKind::Backup,
        EventKind::Switchover,
    ];

    /// The name stored and sent for the kind (its serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "Create",
            EventKind::Update => "Update",
            EventKind::Restart => "Restart",
            EventKind::Stop => "Stop",
            EventKind::Start => "Start",
            EventKind::Delete => "Delete",
            EventKind::Backup => "Backup",
            EventKind::Switchover => "Switchover",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    pub fn from_event(event: Event) -> Option<EventKind> {
        Some(match event {
            Event::Create => EventKind::Create,
            Event::Update => EventKind::Update,
            Event::Restart => EventKind::Restart,
            Event::Stop => EventKind::Stop,
            Event::Start => EventKind::Start,
            Event::Delete => EventKind::Delete,
            _ => return None,
        })
    }
}

/// Control plane → data plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataPlaneEvent {
    pub event_id: Uuid,
    pub instance_id: Uuid,
    pub org: String,
    pub name: String,
    pub generation: i64,
    pub kind: EventKind,
    pub spec: InstanceSpec,
    /// What the control plane predicted for this change, so the data plane
    /// can report whether the prediction held.
    #[serde(default)]
    pub restart_predicted: bool,
    /// For a `Create` whose spec restores another instance's backups: that
    /// instance, resolved by the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreSource>,
    /// For a `Switchover`: the member to promote (`None`: the most
    /// advanced standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_to: Option<u32>,
}

/// The backups a new instance is restored from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSource {
    pub instance_id: Uuid,
    pub target: RestoreTarget,
    /// Whether the source still runs (its newest WAL is archived first).
    pub live: bool,
}

/// What a data-plane report says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReportKind {
    Created,
    Updated,
    Restarted,
    Stopped,
    Started,
    Deleted,
    Failed,
    /// The data plane brought a server back by itself (e.g. restarted it
    /// after a crash); the report's note says what happened.
    Recovered,
    /// The data plane promoted a standby because the primary was gone; the
    /// report's note says which members and why.
    FailedOver,
    /// A periodic re-observation: updates the observed spec, moves no state.
    Observed,
    /// A backup finished (`note`) or failed (`error`); moves no state.
    Backup,
    /// A requested switchover finished (`note`) or was refused (`error`);
    /// moves no state.
    SwitchedOver,
}

impl ReportKind {
    /// The state-machine event this report feeds, if any.
    pub fn event(self) -> Option<Event> {
        Some(match self {
            ReportKind::Created => Event::Created,
            ReportKind::Updated => Event::Updated,
            ReportKind::Restarted => Event::Restarted,
            ReportKind::Stopped => Event::Stopped,
            ReportKind::Started => Event::Started,
            ReportKind::Deleted => Event::Deleted,
            ReportKind::Failed => Event::Failed,
            ReportKind::Recovered => Event::Recovered,
            ReportKind::FailedOver => Event::FailedOver,
            ReportKind::Observed | ReportKind::Backup | ReportKind::SwitchedOver => return None,
        })
    }
}

/// Data plane → control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusReport {
    pub instance_id: Uuid,
    /// The generation this report is about (`observed_generation`).
    pub generation: i64,
    pub kind: ReportKind,
    #[serde(default)]
    pub observed: Option<ObservedSpec>,
    #[serde(default)]
    pub connection: Option<ConnectionInfo>,
    /// For `Failed`: why, in words a user can act on. Never contains secrets.
    #[serde(default)]
    pub error: Option<String>,
    /// Whether Postgres was restarted to apply this generation.
    #[serde(default)]
    pub restarted: bool,
    /// Set when the control plane's restart prediction did not hold.
    #[serde(default)]
    pub prediction_note: Option<String>,
    /// What the data plane did by itself, for the history (e.g. "crashed:
    /// killed by signal 9; restarted in 0.4 s"). Never contains secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The instance's backups and how far a restore can reach, when the
    /// data plane read them for this report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<BackupCatalog>,
    /// What the server was doing when it was observed, for the activity
    /// charts; absent when the data plane does not sample it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
}

impl StatusReport {
    /// A report of `kind` with nothing else in it yet.
    pub fn new(instance_id: Uuid, generation: i64, kind: ReportKind) -> StatusReport {
        StatusReport {
            instance_id,
            generation,
            kind,
            observed: None,
            connection: None,
            error: None,
            restarted: false,
            prediction_note: None,
            note: None,
            backups: None,
            activity: None,
        }
    }
}

/// One sample of a running server's activity. The counters are cumulative
/// (since the server's statistics were last reset); rates are derived from
/// two samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Activity {
    /// Client connections (`pg_stat_activity`, client backends).
    pub connections: i64,
    /// Transactions committed and rolled back, over all databases
    /// (`pg_stat_database`).
    pub transactions: i64,
    /// The size of the databases (not the templates), in bytes.
    pub database_bytes: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_are_stored_as_their_serde_names() {
        for k in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("Resize"), None);
    }

    #[test]
    fn every_command_event_has_a_kind_and_no_report_does() {
        for e in Event::ALL {
            assert_eq!(EventKind::from_event(e).is_some(), e.is_command(), "{e}");
        }
    }

    #[test]
    fn event_round_trips_as_json() {
        let ev = DataPlaneEvent {
            event_id: Uuid::nil(),
            instance_id: Uuid::nil(),
            org: "acme".into(),
            name: "orders".into(),
            generation: 3,
            kind: EventKind::Update,
            spec: InstanceSpec::default(),
            restart_predicted: true,
            restore_from: None,
            switchover_to: None,
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(serde_json::from_str::<DataPlaneEvent>(&json).unwrap(), ev);
    }
}

/// What the instance agent in a Kubernetes pod answers on its status
/// endpoint (`GET /status`), which the operator reads into the resource's
/// status. It carries no secret: no password, no connection string.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// What the server runs, observed when the request came; absent until
    /// the agent has converged a spec, or when observing failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<ObservedSpec>,
    /// `pg_postmaster_start_time()` of the running server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The resource generation whose spec the agent last converged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged_generation: Option<i64>,
    /// Why the last converge or this observation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How often the agent has started the server again after it ended on
    /// its own (a crash, a kill), since the agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    /// How the server last ended on its own: `killed by signal 9
    /// (SIGKILL)`, with Postgres's last `FATAL` or `PANIC` line when it
    /// wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}
