//! Leader election on a `coordination.k8s.io/v1` Lease: of all operator
//! replicas, only the holder of the Lease runs the controller.
//!
//! The protocol is the one client-go uses, written against the typed API:
//!
//! - a candidate takes the Lease when it does not exist, when nobody holds it
//!   (a holder released it on shutdown), or when its record has not changed
//!   for `lease_duration` **as measured on the candidate's own clock** — the
//!   holder's `renewTime` is never compared with local time, so clock skew
//!   between nodes cannot make two leaders;
//! - every write is a replace carrying the `resourceVersion` that was read,
//!   so of two candidates racing for an expired Lease exactly one wins (the
//!   other gets 409 Conflict and stays a candidate);
//! - the leader renews every `retry_period`; when it has not managed to renew
//!   for `renew_deadline` it stops leading (the controller is cancelled
//!   before `lease_duration` can expire for the others);
//! - on a clean shutdown the leader releases the Lease (empty holder), so a
//!   standby takes over within one `retry_period` instead of a whole
//!   `lease_duration`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Where the Lease is and how fast leadership moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's name in `holderIdentity` (the pod name in a cluster).
    pub identity: String,
    /// How long a silent holder keeps the Lease.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why a leader stopped leading without being asked to.
#[derive(Debug, thiserror::Error)]
#[error("lost the leader Lease {namespace}/{name}: not renewed for {after:?} (last error: {last})")]
pub struct LostLease {
    pub namespace: String,
    pub name: String,
    pub after: Duration,
    pub last: String,
}

/// One candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The holder record last seen and when (on our clock) it last changed.
    observed: Option<(Record, Instant)>,
}

/// The part of a Lease that says who holds it and whether they are alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Tries until this replica holds the Lease (`true`) or `shutdown` is
    /// cancelled (`false`).
    pub async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.settings.name, identity = %self.settings.identity, "became the leader");
                    return true;
                }
                Ok(false) => {}
                Err(error) => debug!(%error, "acquiring the leader Lease"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.settings.retry_period) => {}
            }
        }
    }

    /// Renews every `retry_period` until `stop` is cancelled (`Ok`), or
    /// until renewal has failed for `renew_deadline` or someone else holds
    /// the Lease (`Err`).
    pub async fn keep(&mut self, stop: &CancellationToken) -> Result<(), LostLease> {
        let mut last_renewed = Instant::now();
        let mut last_error = String::from("none");
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.settings.retry_period) => {}
            }
            match tokio::time::timeout(self.settings.retry_period, self.try_acquire_or_renew())
                .await
            {
                Ok(Ok(true)) => last_renewed = Instant::now(),
                Ok(Ok(false)) => {
                    last_error = "another replica holds the Lease".to_owned();
                    return Err(self.lost(last_renewed, last_error));
                }
                Ok(Err(error)) => last_error = error.to_string(),
                Err(_) => last_error = "renewal timed out".to_owned(),
            }
            if last_renewed.elapsed() >= self.settings.renew_deadline {
                return Err(self.lost(last_renewed, last_error));
            }
        }
    }

    fn lost(&self, last_renewed: Instant, last: String) -> LostLease {
        warn!(lease = %self.settings.name, %last, "lost the leader Lease");
        LostLease {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            after: last_renewed.elapsed(),
            last,
        }
    }

    /// Gives the Lease up (empty holder) so a standby need not wait for it to
    /// expire. Only if this replica still holds it; errors are logged.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        if Record::of(&lease).holder.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.settings.name, "released the leader Lease"),
            Err(error) => warn!(%error, "releasing the leader Lease"),
        }
    }

    /// One step of the protocol: `Ok(true)` when this replica holds the
    /// Lease afterwards, `Ok(false)` when another live replica does or a
    /// concurrent write won.
    pub async fn try_acquire_or_renew(&mut self) -> kube::Result<bool> {
        let now = MicroTime(Timestamp::now());
        let me = self.settings.identity.clone();
        let duration_secs = i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };

        let record = Record::of(&lease);
        let changed = self.observed.as_ref().map(|(r, _)| r) != Some(&record);
        if changed {
            self.observed = Some((record.clone(), Instant::now()));
        }
        let held_by_me = record.holder.as_deref() == Some(me.as_str());
        let silent_for = self
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, at)| at.elapsed());
        let expired = record.holder.is_none() || silent_for >= self.settings.lease_duration;
        if !held_by_me && !expired {
            return Ok(false);
        }

        let spec = lease.spec.get_or_insert_with(Default::default);
        if !held_by_me {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(record.transitions.saturating_add(1));
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now);
        // `lease` still carries the resourceVersion we read: a concurrent
        // writer makes this a 409, never a second leader.
        let written = conflict_is_false(
            self.api
                .replace(&self.settings.name, &PostParams::default(), &lease)
                .await,
        )?;
        Ok(written)
    }
}

fn conflict_is_false(result: kube::Result<Lease>) -> kube::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}
