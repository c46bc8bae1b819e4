//! The status as a pure function of what the operator observed: the
//! StatefulSet's rollout, what the agent in the pod reports, whether a
//! restart was scheduled, the previous status (for transition times and a
//! restart still in flight) and the time.

use crd::{
    Condition, ConditionStatus, ConditionType, Connection, ObservedSpecStatus, Phase,
    PostgresInstance, PostgresInstanceStatus,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;

use crate::builders;
use crate::pod_status::PodObservation;

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

/// Why the agent in the pod has not converged the resource's generation
/// yet, when it answered and has not.
pub fn agent_behind(pi: &PostgresInstance, pod: &PodObservation) -> Option<String> {
    let PodObservation::Agent(status) = pod else {
        return None;
    };
    let generation = pi.metadata.generation?;
    if status.converged_generation.is_some_and(|g| g >= generation) {
        return None;
    }
    let mut why = match status.converged_generation {
        Some(g) => format!("the agent in the pod runs generation {g} of {generation}"),
        None => format!("the agent in the pod has not converged generation {generation} yet"),
    };
    if let Some(error) = &status.error {
        why.push_str(": ");
        why.push_str(error);
    }
    Some(why)
}

/// Whether the spec says stopped but the pod is still there (terminating,
/// or its server still answering): not `Stopped` until it is gone.
pub fn stopping(pi: &PostgresInstance, pod: &PodObservation) -> bool {
    pi.spec.stopped && !matches!(pod, PodObservation::NoPod)
}

/// The observed spec, server start time and converged generation: the
/// agent's when it answered; for a stopped instance without a pod, not
/// running; otherwise the last ones known.
fn observation(
    old: &PostgresInstanceStatus,
    pod: &PodObservation,
    stopped_and_gone: bool,
) -> (Option<ObservedSpecStatus>, Option<String>, Option<i64>) {
    match pod {
        PodObservation::Agent(status) => (
            status
                .observed
                .clone()
                .map(ObservedSpecStatus::from)
                .or_else(|| old.observed_spec.clone()),
            status
                .started_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            status.converged_generation,
        ),
        PodObservation::NoPod if stopped_and_gone => (
            old.observed_spec.as_ref().map(|o| ObservedSpecStatus {
                postgres_version: o.postgres_version.clone(),
                running: false,
                ..ObservedSpecStatus::default()
            }),
            None,
            old.converged_generation,
        ),
        PodObservation::NoPod | PodObservation::Unreachable(_) => (
            old.observed_spec.clone(),
            old.server_started_at.clone(),
            old.converged_generation,
        ),
    }
}

/// The status after a successful reconcile.
pub fn converged_status(
    pi: &PostgresInstance,
    rollout: &Rollout,
    pod: &PodObservation,
    restart_scheduled: bool,
    now: &str,
) -> PostgresInstanceStatus {
    let old = pi.status.clone().unwrap_or_default();
    let generation = pi.metadata.generation;
    let stopped = pi.spec.stopped;
    let behind = agent_behind(pi, pod);
    let done = rollout.complete() && behind.is_none() && !stopping(pi, pod);
    let ready = done && !stopped;
    let (observed_spec, server_started_at, converged_generation) =
        observation(&old, pod, stopped && rollout.complete());
    let (server_restarts, last_server_exit) = match pod {
        PodObservation::Agent(status) => (status.restarts, status.last_exit.clone()),
        PodObservation::NoPod | PodObservation::Unreachable(_) => {
            (old.server_restarts, old.last_server_exit.clone())
        }
    };
    let observed_pending = observed_spec
        .as_ref()
        .filter(|o| o.running)
        .map(|o| o.pending_restart.clone())
        .unwrap_or_default();
    // A restart is pending from the moment it is scheduled until the rollout
    // completes: remembered in the previous status, and re-derived from the
    // StatefulSet (its template's restart hash differs from the one the last
    // completed rollout ran), so a reconcile that reads a stale status does
    // not lose it.
    let hash_behind = matches!(
        (&old.rolled_out_restart_hash, &rollout.restart_hash),
        (Some(ran), Some(template)) if ran != template
    );
    let pending_restart =
        restart_scheduled || (!done && (hash_behind || old.is_true(ConditionType::PendingRestart)));
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
        observed_spec,
        server_started_at,
        converged_generation,
        server_restarts,
        last_server_exit,
        connection: Some(Connection {
            host: builders::host(pi),
            port: builders::POSTGRES_PORT,
            database: "postgres".to_owned(),
            user: builders::SUPERUSER.to_owned(),
            secret_name: builders::secret_name(pi),
        }),
        rolled_out_restart_hash,
    };
    let progress = match &behind {
        Some(why) => why.clone(),
        None if stopping(pi, pod) => "waiting for the pod to stop".to_owned(),
        None => format!("{}/{} replicas ready", rollout.ready, rollout.desired),
    };
    let conds = [
        match (ready, stopped) {
            (true, _) => (ConditionType::Ready, true, "PodReady", progress.clone()),
            (false, false) if behind.is_some() => (
                ConditionType::Ready,
                false,
                "AgentConverging",
                progress.clone(),
            ),
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
        } else if behind.is_some() && rollout.complete() {
            (
                ConditionType::Progressing,
                true,
                "AgentConverging",
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
        } else if !observed_pending.is_empty() {
            (
                ConditionType::PendingRestart,
                true,
                "ParametersPendingRestart",
                format!(
                    "the server runs with changed parameters that need a restart: {}",
                    observed_pending.join(", ")
                ),
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

#[cfg(test)]
mod tests {
    use domain::{AgentStatus, ObservedSpec};

    use super::*;

    fn instance(generation: i64, stopped: bool) -> PostgresInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgplane.io/v1",
            "kind": "PostgresInstance",
            "metadata": { "name": "orders", "namespace": "shop", "generation": generation },
            "spec": { "config": { "work_mem": "32MB" }, "stopped": stopped },
        }))
        .unwrap()
    }

    fn rolled_out(replicas: i32) -> Rollout {
        Rollout {
            desired: replicas,
            ready: replicas,
            updated: replicas,
            generation: 1,
            observed_generation: 1,
            ..Rollout::default()
        }
    }

    fn agent(converged: Option<i64>, work_mem: &str, pending: &[&str]) -> PodObservation {
        PodObservation::Agent(Box::new(AgentStatus {
            observed: Some(ObservedSpec {
                postgres_version: "15".into(),
                config: [("work_mem".to_owned(), work_mem.to_owned())].into(),
                running: true,
                pending_restart: pending.iter().map(|p| (*p).to_owned()).collect(),
                ..ObservedSpec::default()
            }),
            started_at: Some(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
            converged_generation: converged,
            ..AgentStatus::default()
        }))
    }

    fn condition(status: &PostgresInstanceStatus, type_: ConditionType) -> (bool, &str) {
        let c = status.condition(type_).unwrap();
        (c.status == ConditionStatus::True, c.reason.as_str())
    }

    #[test]
    fn the_agents_observation_is_the_status_and_ready_waits_for_its_generation() {
        let pi = instance(2, false);
        let behind = converged_status(
            &pi,
            &rolled_out(1),
            &agent(Some(1), "16MB", &[]),
            false,
            "t",
        );
        assert_eq!(
            condition(&behind, ConditionType::Ready),
            (false, "AgentConverging")
        );
        assert_eq!(
            behind.observed_spec.as_ref().unwrap().config["work_mem"],
            "16MB",
            "what runs, not what is desired"
        );
        assert_eq!(behind.converged_generation, Some(1));
        assert_eq!(
            behind.server_started_at.as_deref(),
            Some("2027-01-15T08:00:00.000000Z")
        );

        let caught_up = converged_status(
            &pi,
            &rolled_out(1),
            &agent(Some(2), "32MB", &[]),
            false,
            "t",
        );
        assert_eq!(
            condition(&caught_up, ConditionType::Ready),
            (true, "PodReady")
        );
        assert_eq!(caught_up.phase, Some(Phase::Running));
        assert!(!condition(&caught_up, ConditionType::PendingRestart).0);

        let pending = converged_status(
            &pi,
            &rolled_out(1),
            &agent(Some(2), "32MB", &["shared_buffers"]),
            false,
            "t",
        );
        assert_eq!(
            condition(&pending, ConditionType::PendingRestart),
            (true, "ParametersPendingRestart")
        );
    }

    #[test]
    fn restarts_after_a_crash_reach_the_status_and_stay_while_the_agent_is_unreachable() {
        let mut pi = instance(1, false);
        let mut crashed = agent(Some(1), "16MB", &[]);
        if let PodObservation::Agent(status) = &mut crashed {
            status.restarts = Some(2);
            status.last_exit = Some("killed by signal 9 (SIGKILL)".into());
        }
        let status = converged_status(&pi, &rolled_out(1), &crashed, false, "t");
        assert_eq!(status.server_restarts, Some(2));
        assert_eq!(
            status.last_server_exit.as_deref(),
            Some("killed by signal 9 (SIGKILL)")
        );
        pi.status = Some(status.clone());
        let unreachable = PodObservation::Unreachable("connection refused".into());
        let kept = converged_status(&pi, &rolled_out(1), &unreachable, false, "t");
        assert_eq!(
            (kept.server_restarts, kept.last_server_exit),
            (status.server_restarts, status.last_server_exit)
        );
        let fresh = converged_status(
            &pi,
            &rolled_out(1),
            &agent(Some(1), "16MB", &[]),
            false,
            "t",
        );
        assert_eq!(
            fresh.server_restarts, None,
            "a new pod's agent has restarted nothing"
        );
    }

    #[test]
    fn without_an_answer_the_last_observation_stays_and_a_stopped_instance_does_not_run() {
        let mut pi = instance(2, false);
        pi.status = Some(converged_status(
            &pi,
            &rolled_out(1),
            &agent(Some(2), "32MB", &[]),
            false,
            "t",
        ));
        let unreachable = PodObservation::Unreachable("connection refused".into());
        let kept = converged_status(&pi, &rolled_out(1), &unreachable, false, "t");
        assert_eq!(
            kept.observed_spec,
            pi.status.as_ref().unwrap().observed_spec
        );
        assert_eq!(
            kept.server_started_at,
            pi.status.as_ref().unwrap().server_started_at
        );
        assert_eq!(condition(&kept, ConditionType::Ready), (true, "PodReady"));

        pi.spec.stopped = true;
        let terminating = converged_status(
            &pi,
            &rolled_out(0),
            &agent(Some(2), "32MB", &[]),
            false,
            "t",
        );
        assert_ne!(
            terminating.phase,
            Some(Phase::Stopped),
            "not stopped while the pod's server answers"
        );
        let stopped = converged_status(&pi, &rolled_out(0), &PodObservation::NoPod, false, "t");
        let observed = stopped.observed_spec.unwrap();
        assert!(!observed.running);
        assert!(observed.config.is_empty());
        assert_eq!(observed.postgres_version, "15");
        assert_eq!(stopped.server_started_at, None);
        assert_eq!(stopped.phase, Some(Phase::Stopped));

        let never_observed = instance(1, false);
        let status = converged_status(
            &never_observed,
            &rolled_out(1),
            &PodObservation::NoPod,
            false,
            "t",
        );
        assert_eq!(status.observed_spec, None, "nothing is made up");
    }
}
