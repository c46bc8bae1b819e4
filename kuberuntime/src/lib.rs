//! The conductor's Kubernetes runtime: each queued event becomes a
//! server-side apply (or delete) of a `PostgresInstance` in one namespace,
//! and the operator's status on it becomes the report to the control plane.
//!
//! # When the control plane sees `Up`
//!
//! The control plane moves an instance to `Up` on the report of the event
//! (`Created`, `Updated`, …); periodic `Observed` reports move no state. So
//! [`KubernetesRuntime::apply`] does not report as soon as the resource is
//! written: it waits — bounded by [`KubernetesRuntime::ready_timeout`] — until
//! the operator has observed the applied generation and says `Ready=True`
//! (`phase: Stopped` for a stopped spec). `Degraded=True` at that generation
//! is a failure with the operator's reason (the instance shows `Error` until
//! the next event). No readiness within the bound is not a failure: the
//! event is left to be redelivered ([`RuntimeError::NotConverged`]) and
//! waited for again, until the conductor's delivery limit turns it into one.
//! Keep the bound below the conductor's visibility timeout, so the event is
//! not redelivered while it waits.
//!
//! Every successful apply reports the password in the operator's Secret, so
//! a Secret recreated behind the operator's back (it then holds a new
//! password, which the pod's agent applies) reaches the control plane's
//! secret store with the next event. A `Restart` event sets the spec's
//! `restartRequest`, which the operator applies as a rolling restart;
//! `restarted` is reported whenever the operator's completed rollout changed
//! the restart hash (a restart request, or a change that needed a restart).
//!
//! # Idempotency
//!
//! The resource carries the event's generation in the annotation
//! [`GENERATION_ANNOTATION`]; an event whose generation is not newer than the
//! one applied is not applied again, only re-reported. Deleting a resource
//! that is already gone is a success. A resource of the same name that
//! belongs to another instance (label [`INSTANCE_ID_LABEL`]) is never
//! touched.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use conductor::runtime::report_kind;
use conductor::{Applied, Observation, Runtime, RuntimeError};
use crd::{ConditionType, Phase, PostgresInstance};
use domain::{ConnectionInfo, DataPlaneEvent, EventKind, ObservedSpec, ReportKind};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use uuid::Uuid;

/// Field manager of the conductor's server-side applies.
pub const FIELD_MANAGER: &str = "pgplane-conductor";
/// Label holding the control plane's instance id.
pub const INSTANCE_ID_LABEL: &str = "pgplane.io/instance-id";
/// Label holding the instance's organization.
pub const ORG_LABEL: &str = "pgplane.io/org";
/// Annotation holding the generation of the last applied event.
pub const GENERATION_ANNOTATION: &str = "pgplane.io/generation";

/// Extensions of the instance image (PostgreSQL 15 with contrib).
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "btree_gin",
    "btree_gist",
    "citext",
    "hstore",
    "pg_stat_statements",
    "pg_trgm",
    "pgcrypto",
    "uuid-ossp",
];

/// Runs instances as `PostgresInstance` resources in one namespace.
pub struct KubernetesRuntime {
    client: Client,
    namespace: String,
    /// How long `apply` waits for the operator to report the applied
    /// generation ready (or a delete to finish).
    pub ready_timeout: Duration,
    /// How often the resource is re-read while waiting.
    pub poll_every: Duration,
    /// What [`Runtime::available_extensions`] reports.
    pub extensions: Vec<String>,
}

impl KubernetesRuntime {
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            ready_timeout: Duration::from_secs(45),
            poll_every: Duration::from_millis(250),
            extensions: DEFAULT_EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    /// A runtime with the in-cluster client, or the one `KUBECONFIG` names.
    pub async fn connect(namespace: impl Into<String>) -> Result<Self, kube::Error> {
        Ok(Self::new(Client::try_default().await?, namespace))
    }

    fn instances(&self) -> Api<PostgresInstance> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn failed(&self, op: &str, name: &str, e: kube::Error) -> RuntimeError {
        RuntimeError::Apply(format!(
            "{op} PostgresInstance {}/{name}: {e}",
            self.namespace
        ))
    }

    /// Server-side applies the event's spec, unless this generation (or a
    /// newer one) is already applied.
    async fn write(
        &self,
        event: &DataPlaneEvent,
        existing: Option<&PostgresInstance>,
    ) -> Result<(), RuntimeError> {
        if existing
            .and_then(applied_generation)
            .is_some_and(|g| g >= event.generation)
        {
            tracing::debug!(name = %event.name, generation = event.generation, "generation already applied");
            return Ok(());
        }
        let pi = desired(event, existing);
        self.instances()
            .patch(
                &event.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&pi),
            )
            .await
            .map_err(|e| self.failed("applying", &event.name, e))?;
        Ok(())
    }

    /// Polls until the operator reports the applied generation converged.
    async fn converged(&self, name: &str) -> Result<PostgresInstance, RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        loop {
            let pi = self
                .instances()
                .get(name)
                .await
                .map_err(|e| self.failed("reading", name, e))?;
            match readiness(&pi) {
                Readiness::Ready => return Ok(pi),
                Readiness::Degraded(why) => {
                    return Err(RuntimeError::Apply(format!(
                        "PostgresInstance {}/{name} is degraded: {why}",
                        self.namespace
                    )))
                }
                Readiness::Waiting(why) if tokio::time::Instant::now() >= deadline => {
                    return Err(RuntimeError::NotConverged(format!(
                        "PostgresInstance {}/{name} not ready after {}s: {why}",
                        self.namespace,
                        self.ready_timeout.as_secs()
                    )))
                }
                Readiness::Waiting(_) => tokio::time::sleep(self.poll_every).await,
            }
        }
    }

    /// Deletes the resource (already gone is success) and waits until the
    /// operator's finalizer has cleaned up and it is gone.
    async fn delete(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .instances()
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(self.failed("deleting", name, e)),
        }
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        loop {
            let left = self
                .instances()
                .get_opt(name)
                .await
                .map_err(|e| self.failed("reading", name, e))?;
            if left.is_none() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Apply(format!(
                    "PostgresInstance {}/{name} still present {}s after its deletion (finalizer not removed)",
                    self.namespace,
                    self.ready_timeout.as_secs()
                )));
            }
            tokio::time::sleep(self.poll_every).await;
        }
    }

    /// The password in the operator's Secret, if it can be read.
    async fn password(&self, pi: &PostgresInstance) -> Option<String> {
        let secret_name = pi.status.as_ref()?.connection.as_ref()?.secret_name.clone();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets.get_opt(&secret_name).await.ok()??;
        let bytes = secret.data?.remove("password")?.0;
        String::from_utf8(bytes).ok()
    }
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn available_extensions(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self.extensions.clone())
    }

    async fn apply(&self, event: &DataPlaneEvent) -> Result<Applied, RuntimeError> {
        let existing = self
            .instances()
            .get_opt(&event.name)
            .await
            .map_err(|e| self.failed("reading", &event.name, e))?;
        let foreign = existing
            .as_ref()
            .is_some_and(|pi| instance_id(pi) != Some(event.instance_id));
        if event.kind == EventKind::Delete {
            if !foreign {
                self.delete(&event.name).await?;
            }
            return Ok(Applied {
                report: ReportKind::Deleted,
                observed: None,
                connection: None,
                restarted: false,
                password: None,
            });
        }
        if foreign {
            return Err(RuntimeError::Apply(format!(
                "PostgresInstance {}/{} belongs to another instance",
                self.namespace, event.name
            )));
        }
        self.write(event, existing.as_ref()).await?;
        let pi = self.converged(&event.name).await?;
        let created = event.kind == EventKind::Create;
        let password = self.password(&pi).await;
        let rolled_out = |pi: &PostgresInstance| {
            pi.status
                .as_ref()
                .and_then(|s| s.rolled_out_restart_hash.clone())
        };
        let restarted = matches!(
            (existing.as_ref().and_then(rolled_out), rolled_out(&pi)),
            (Some(before), Some(after)) if before != after
        );
        Ok(Applied {
            report: report_kind(event.kind, created, false, event.spec.stopped, restarted),
            observed: Some(observed(&pi)),
            connection: connection(&pi),
            restarted,
            password,
        })
    }

    async fn observe_all(&self) -> Vec<Observation> {
        let list = match self
            .instances()
            .list(&ListParams::default().labels(INSTANCE_ID_LABEL))
            .await
        {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, namespace = %self.namespace, "listing PostgresInstances failed");
                return Vec::new();
            }
        };
        list.items
            .iter()
            .filter(|pi| {
                pi.status.as_ref().and_then(|s| s.observed_generation) == pi.metadata.generation
            })
            .filter_map(|pi| {
                Some(Observation {
                    instance_id: instance_id(pi)?,
                    generation: applied_generation(pi)?,
                    observed: observed(pi),
                })
            })
            .collect()
    }
}

/// The resource for an event: name, identifying labels, generation
/// annotation and the spec. A `Restart` event sets a new `restartRequest`
/// (its generation), which the operator turns into a rolling restart; every
/// other event keeps the one `existing` has, so that it restarts nothing.
pub fn desired(event: &DataPlaneEvent, existing: Option<&PostgresInstance>) -> PostgresInstance {
    let mut spec: crd::PostgresInstanceSpec = event.spec.clone().into();
    spec.restart_request = if event.kind == EventKind::Restart {
        Some(format!("generation-{}", event.generation))
    } else {
        existing.and_then(|pi| pi.spec.restart_request.clone())
    };
    let mut pi = PostgresInstance::new(&event.name, spec);
    pi.metadata.labels = Some(BTreeMap::from([
        (INSTANCE_ID_LABEL.to_owned(), event.instance_id.to_string()),
        (ORG_LABEL.to_owned(), event.org.clone()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
    ]));
    pi.metadata.annotations = Some(BTreeMap::from([(
        GENERATION_ANNOTATION.to_owned(),
        event.generation.to_string(),
    )]));
    pi
}

fn instance_id(pi: &PostgresInstance) -> Option<Uuid> {
    pi.labels()
        .get(INSTANCE_ID_LABEL)
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn applied_generation(pi: &PostgresInstance) -> Option<i64> {
    pi.annotations().get(GENERATION_ANNOTATION)?.parse().ok()
}

enum Readiness {
    Ready,
    Degraded(String),
    Waiting(String),
}

/// Whether the operator has converged the resource's current generation.
fn readiness(pi: &PostgresInstance) -> Readiness {
    let generation = pi.metadata.generation;
    let Some(status) = pi.status.as_ref() else {
        return Readiness::Waiting("no status from the operator yet".into());
    };
    if status.observed_generation != generation {
        return Readiness::Waiting(format!(
            "operator has observed generation {:?} of {:?}",
            status.observed_generation, generation
        ));
    }
    if let Some(c) = status
        .condition(ConditionType::Degraded)
        .filter(|c| c.status == crd::ConditionStatus::True && c.observed_generation == generation)
    {
        return Readiness::Degraded(format!("{}: {}", c.reason, c.message));
    }
    let done = if pi.spec.stopped {
        status.phase == Some(Phase::Stopped)
    } else {
        status.is_true(ConditionType::Ready)
    };
    if done {
        return Readiness::Ready;
    }
    let why = status
        .condition(ConditionType::Ready)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "no Ready condition".into());
    Readiness::Waiting(format!("phase {:?}, {why}", status.phase))
}

/// What runs: the operator's observed spec when it reports one, else the
/// spec it converged (the operator reports readiness of exactly that spec).
fn observed(pi: &PostgresInstance) -> ObservedSpec {
    let status = pi.status.clone().unwrap_or_default();
    if let Some(o) = status.observed_spec.clone() {
        return o.into();
    }
    let spec: domain::InstanceSpec = pi.spec.clone().into();
    let mut extensions: Vec<String> = spec.extension_names().map(str::to_owned).collect();
    extensions.sort();
    ObservedSpec {
        postgres_version: spec.postgres_version.clone(),
        extensions,
        config: domain::restart::effective_config(&spec),
        running: status.phase == Some(Phase::Running),
        pending_restart: Vec::new(),
    }
}

fn connection(pi: &PostgresInstance) -> Option<ConnectionInfo> {
    let c = pi.status.as_ref()?.connection.as_ref()?;
    Some(ConnectionInfo {
        host: c.host.clone(),
        port: c.port,
        database: c.database.clone(),
        user: c.user.clone(),
    })
}
