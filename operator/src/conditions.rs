//! The status as a pure function of what the operator observed: the
//! StatefulSet's rollout, whether a restart was scheduled, the previous
//! status (for transition times and a restart still in flight) and the time.

use crd::{
    Condition, ConditionStatus, ConditionType, Connection, Phase, PostgresInstance,
    PostgresInstanceStatus,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;

use crate::builders;

/// What the StatefulSet says about its pods (the kubelet and the StatefulSet
/// controller write it; in tests, the test does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    pub generation: i64,
    pub observed_generation: i64,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    /// The pod template's restart hash.
    pub restart_hash: Option<String>,
}

impl Rollout {
    pub fn of(sts: &StatefulSet) -> Self {
        let status = sts.status.clone().unwrap_or_default();
        Self {
            desired: sts.spec.replicas.unwrap_or(1),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            generation: sts.metadata.generation.unwrap_or(0),
            observed_generation: status.observed_generation.unwrap_or(0),
            current_revision: status.current_revision,
            update_revision: status.update_revision,
            restart_hash: sts
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(builders::RESTART_HASH_ANNOTATION))
                .cloned(),
        }
    }

    /// Every pod runs the current template and is ready.
    pub fn complete(&self) -> bool {
        self.observed_generation >= self.generation
            && self.ready >= self.desired
            && (self.desired == 0 || self.updated >= self.desired)
            && (self.update_revision.is_none() || self.current_revision == self.update_revision)
    }
}

/// The status after a successful reconcile.
pub fn converged_status(
    pi: &PostgresInstance,
    rollout: &Rollout,
    restart_scheduled: bool,
    now: &str,
) -> PostgresInstanceStatus {
    let old = pi.status.clone().unwrap_or_default();
    let generation = pi.metadata.generation;
    let stopped = pi.spec.stopped;
    let done = rollout.complete();
    let ready = done && !stopped;
    // A restart is pending from the moment it is scheduled until the rollout
    // completes: remembered in the previous status, and re-derived from the
    // StatefulSet (its template's restart hash differs from the one the last
    // completed rollout ran), so a reconcile that reads a stale status does
    // not lose it.
    let behind = matches!(
        (&old.rolled_out_restart_hash, &rollout.restart_hash),
        (Some(ran), Some(template)) if ran != template
    );
    let pending_restart =
        restart_scheduled || (!done && (behind || old.is_true(ConditionType::PendingRestart)));
    let rolled_out_restart_hash = if done {
        rollout.restart_hash.clone()
    } else {
        old.rolled_out_restart_hash.clone()
    };
    let phase = match (stopped, done) {
        (true, true) => Phase::Stopped,
        (false, true) => Phase::Running,
        _ if pending_restart || matches!(old.phase, Some(Phase::Running | Phase::Updating)) => {
            Phase::Updating
        }
        (true, false) => Phase::Updating,
        (false, false) => Phase::Provisioning,
    };
    let mut status = PostgresInstanceStatus {
        phase: Some(phase),
        observed_generation: generation,
        conditions: old.conditions.clone(),
        observed_spec: old.observed_spec.clone(),
        connection: Some(Connection {
            host: builders::host(pi),
            port: builders::POSTGRES_PORT,
            database: "postgres".to_owned(),
            user: builders::SUPERUSER.to_owned(),
            secret_name: builders::secret_name(pi),
        }),
        rolled_out_restart_hash,
    };
    let progress = format!("{}/{} replicas ready", rollout.ready, rollout.desired);
    let conds = [
        match (ready, stopped) {
            (true, _) => (ConditionType::Ready, true, "PodReady", progress.clone()),
            (false, true) => (
                ConditionType::Ready,
                false,
                "Stopped",
                "stopped by spec".into(),
            ),
            (false, false) => (ConditionType::Ready, false, "PodNotReady", progress.clone()),
        },
        if done {
            (
                ConditionType::Progressing,
                false,
                "Converged",
                progress.clone(),
            )
        } else {
            (
                ConditionType::Progressing,
                true,
                "RollingOut",
                progress.clone(),
            )
        },
        if pending_restart {
            (
                ConditionType::PendingRestart,
                true,
                "RollingRestart",
                "restart-only parameters changed; the pod is restarted by a rolling update".into(),
            )
        } else {
            (
                ConditionType::PendingRestart,
                false,
                "NoRestartPending",
                String::new(),
            )
        },
        (
            ConditionType::Degraded,
            false,
            "ReconcileSucceeded",
            String::new(),
        ),
    ];
    for (type_, is_true, reason, message) in conds {
        set_condition(
            &mut status,
            type_,
            is_true,
            reason,
            &message,
            generation,
            now,
        );
    }
    status
}

/// The previous status with `Degraded` set: the operator could not converge.
pub fn degraded_status(
    pi: &PostgresInstance,
    reason: &str,
    message: &str,
    now: &str,
) -> PostgresInstanceStatus {
    let mut status = pi.status.clone().unwrap_or_default();
    status.phase = Some(Phase::Degraded);
    let generation = pi.metadata.generation;
    set_condition(
        &mut status,
        ConditionType::Degraded,
        true,
        reason,
        message,
        generation,
        now,
    );
    status
}

/// The status while the finalizer deletes the children.
pub fn deleting_status(pi: &PostgresInstance) -> PostgresInstanceStatus {
    let mut status = pi.status.clone().unwrap_or_default();
    status.phase = Some(Phase::Deleting);
    status
}

/// Sets one condition, keeping `lastTransitionTime` when `status` is unchanged.
pub fn set_condition(
    status: &mut PostgresInstanceStatus,
    type_: ConditionType,
    is_true: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &str,
) {
    let value = if is_true {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let last_transition_time = match status.condition(type_) {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => now.to_owned(),
    };
    let condition = Condition {
        type_,
        status: value,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation,
        last_transition_time,
    };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = condition,
        None => status.conditions.push(condition),
    }
    status.conditions.sort_by_key(|c| c.type_);
}

/// A label for the logs: the instance's `namespace/name`.
pub fn key(pi: &PostgresInstance) -> String {
    format!("{}/{}", pi.namespace().unwrap_or_default(), pi.name_any())
}
