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
//! secret store with the next event. Likewise the passwords of the
//! declared roles, from the operator's Secret `NAME-roles`
//! ([`crd::roles_secret_name`]): every successful apply reports the set
//! the Secret holds for the spec's present roles, which the conductor makes
//! the control plane's sealed `role_secrets` (so `pgplane instance
//! credentials NAME --role ROLE` works for an instance on Kubernetes); an
//! unreadable or missing Secret reports none and leaves the stored ones
//! alone. A `Restart` event sets the spec's
//! `restartRequest`, which the operator applies as a rolling restart;
//! `restarted` is reported whenever the operator's completed rollout changed
//! the restart hash (a restart request, or a change that needed a restart).
//!
//! # What is observed
//!
//! What runs is what the agent in the pod observed, as the operator wrote it
//! into `status.observedSpec`: reports and [`Runtime::observe_all`] carry
//! that, and nothing while the status has none — the desired spec is never
//! reported as what runs. The operator re-reads the agent at every resync,
//! so out-of-band changes (`ALTER SYSTEM`, a server that went down) reach
//! the control plane with the conductor's next resync after it. With a real
//! pod, `Ready` at a generation also means that the agent has converged it,
//! so a report's observation is of the applied spec.
//!
//! # Where the resources go
//!
//! [`Placement::Namespace`] puts every instance in one namespace; two
//! organisations' instances of the same name cannot share it (the second is
//! refused, see below). [`Placement::PerOrg`] gives each organisation its own
//! namespace, `PREFIX-ORG` ([`org_namespace`]), created on its first
//! instance and labelled with the organisation: names never clash across
//! organisations, and quotas or network policies can be set per tenant.
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
use k8s_openapi::api::core::v1::{Namespace, Secret};
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

/// Which namespace an instance's resource lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// All instances in this namespace.
    Namespace(String),
    /// Each organisation in `PREFIX-ORG`, created when first needed.
    PerOrg { prefix: String },
}

/// The namespace of an organisation under `prefix`: `prefix-org` when the
/// organisation's name is already a DNS label that fits, otherwise its
/// lowercased, DNS-safe form shortened to fit and suffixed with 8 hex digits
/// of its hash (so distinct organisations never share a namespace).
pub fn org_namespace(prefix: &str, org: &str) -> String {
    const MAX: usize = 63;
    let safe: String = org
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    let safe = safe.trim_matches('-');
    let plain = format!("{prefix}-{safe}");
    if safe == org && plain.len() <= MAX {
        return plain;
    }
    let hash = org.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let suffix = format!("{:08x}", hash as u32);
    let room = MAX.saturating_sub(prefix.len() + 2 + suffix.len());
    let head = safe[..safe.len().min(room)].trim_end_matches('-');
    if head.is_empty() {
        format!("{prefix}-{suffix}")
    } else {
        format!("{prefix}-{head}-{suffix}")
    }
}

/// Runs instances as `PostgresInstance` resources.
pub struct KubernetesRuntime {
    client: Client,
    placement: Placement,
    /// Namespaces this runtime has made sure exist (per-org placement).
    ensured: std::sync::Mutex<std::collections::HashSet<String>>,
    /// How long `apply` waits for the operator to report the applied
    /// generation ready (or a delete to finish).
    pub ready_timeout: Duration,
    /// How often the resource is re-read while waiting.
    pub poll_every: Duration,
    /// What [`Runtime::available_extensions`] reports.
    pub extensions: Vec<String>,
}

impl KubernetesRuntime {
    /// Every instance in `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self::with_placement(client, Placement::Namespace(namespace.into()))
    }

    pub fn with_placement(client: Client, placement: Placement) -> Self {
        Self {
            client,
            placement,
            ensured: std::sync::Mutex::default(),
            ready_timeout: Duration::from_secs(45),
            poll_every: Duration::from_millis(250),
            extensions: DEFAULT_EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    /// A runtime with the in-cluster client, or the one `KUBECONFIG` names.
    pub async fn connect(placement: Placement) -> Result<Self, kube::Error> {
        Ok(Self::with_placement(
            Client::try_default().await?,
            placement,
        ))
    }

    /// The namespace of an organisation's instances.
    pub fn namespace_of(&self, org: &str) -> String {
        match &self.placement {
            Placement::Namespace(ns) => ns.clone(),
            Placement::PerOrg { prefix } => org_namespace(prefix, org),
        }
    }

    /// Creates the organisation's namespace once (per-org placement only).
    async fn ensure_namespace(&self, org: &str, ns: &str) -> Result<(), RuntimeError> {
        if !matches!(self.placement, Placement::PerOrg { .. })
            || self.ensured.lock().expect("poisoned").contains(ns)
        {
            return Ok(());
        }
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(ns.to_owned());
        namespace.metadata.labels = Some(BTreeMap::from([
            (ORG_LABEL.to_owned(), label_value(org)),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                FIELD_MANAGER.to_owned(),
            ),
        ]));
        Api::<Namespace>::all(self.client.clone())
            .patch(
                ns,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&namespace),
            )
            .await
            .map_err(|e| RuntimeError::Apply(format!("creating namespace {ns}: {e}")))?;
        self.ensured.lock().expect("poisoned").insert(ns.to_owned());
        Ok(())
    }

    fn instances(&self, ns: &str) -> Api<PostgresInstance> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn failed(ns: &str, op: &str, name: &str, e: kube::Error) -> RuntimeError {
        RuntimeError::Apply(format!("{op} PostgresInstance {ns}/{name}: {e}"))
    }

    /// Server-side applies the event's spec, unless this generation (or a
    /// newer one) is already applied.
    async fn write(
        &self,
        ns: &str,
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
        self.instances(ns)
            .patch(
                &event.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&pi),
            )
            .await
            .map_err(|e| Self::failed(ns, "applying", &event.name, e))?;
        Ok(())
    }

    /// Polls until the operator reports the applied generation converged.
    async fn converged(&self, ns: &str, name: &str) -> Result<PostgresInstance, RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        loop {
            let pi = self
                .instances(ns)
                .get(name)
                .await
                .map_err(|e| Self::failed(ns, "reading", name, e))?;
            match readiness(&pi) {
                Readiness::Ready => return Ok(pi),
                Readiness::Degraded(why) => {
                    return Err(RuntimeError::Apply(format!(
                        "PostgresInstance {ns}/{name} is degraded: {why}"
                    )))
                }
                Readiness::Waiting(why) if tokio::time::Instant::now() >= deadline => {
                    return Err(RuntimeError::NotConverged(format!(
                        "PostgresInstance {ns}/{name} not ready after {}s: {why}",
                        self.ready_timeout.as_secs()
                    )))
                }
                Readiness::Waiting(_) => tokio::time::sleep(self.poll_every).await,
            }
        }
    }

    /// Deletes the resource (already gone is success) and waits until the
    /// operator's finalizer has cleaned up and it is gone.
    async fn delete(&self, ns: &str, name: &str) -> Result<(), RuntimeError> {
        match self
            .instances(ns)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(Self::failed(ns, "deleting", name, e)),
        }
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        loop {
            let left = self
                .instances(ns)
                .get_opt(name)
                .await
                .map_err(|e| Self::failed(ns, "reading", name, e))?;
            if left.is_none() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Apply(format!(
                    "PostgresInstance {ns}/{name} still present {}s after its deletion (finalizer not removed)",
                    self.ready_timeout.as_secs()
                )));
            }
            tokio::time::sleep(self.poll_every).await;
        }
    }

    /// The password in the operator's Secret, if it can be read.
    async fn password(&self, pi: &PostgresInstance) -> Option<String> {
        let secret_name = pi.status.as_ref()?.connection.as_ref()?.secret_name.clone();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &pi.namespace()?);
        let secret = secrets.get_opt(&secret_name).await.ok()??;
        let bytes = secret.data?.remove("password")?.0;
        String::from_utf8(bytes).ok()
    }

    /// The passwords of the spec's present roles in the operator's roles
    /// Secret; `None` when it cannot be read (the stored ones stay).
    async fn role_passwords(
        &self,
        pi: &PostgresInstance,
        spec: &domain::InstanceSpec,
    ) -> Option<BTreeMap<String, String>> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &pi.namespace()?);
        let name = crd::roles_secret_name(&pi.name_any());
        let secret = match secrets.get_opt(&name).await {
            Ok(secret) => secret?,
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "reading the role passwords failed");
                return None;
            }
        };
        let mut data = secret.data.unwrap_or_default();
        Some(
            spec.roles
                .iter()
                .filter(|r| r.ensure == domain::Ensure::Present)
                .filter_map(|r| {
                    let password = String::from_utf8(data.remove(&r.name)?.0).ok()?;
                    (!password.is_empty()).then(|| (r.name.clone(), password))
                })
                .collect(),
        )
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
        let ns = &self.namespace_of(&event.org);
        let max = domain::validate::MAX_REPLICAS_KUBERNETES;
        if event.kind != EventKind::Delete && event.spec.replicas > max {
            return Err(RuntimeError::Apply(format!(
                "replicas = {} is more than the Kubernetes data plane runs ({max}): standbys are \
                 built by the local data plane only",
                event.spec.replicas
            )));
        }
        if event.kind != EventKind::Delete {
            self.ensure_namespace(&event.org, ns).await?;
        }
        let existing = match self.instances(ns).get_opt(&event.name).await {
            Ok(existing) => existing,
            // A namespace that never existed holds nothing to delete.
            Err(kube::Error::Api(e)) if e.code == 404 && event.kind == EventKind::Delete => None,
            Err(e) => return Err(Self::failed(ns, "reading", &event.name, e)),
        };
        let foreign = existing
            .as_ref()
            .is_some_and(|pi| instance_id(pi) != Some(event.instance_id));
        if event.kind == EventKind::Delete {
            if !foreign && existing.is_some() {
                self.delete(ns, &event.name).await?;
            }
            return Ok(Applied {
                report: ReportKind::Deleted,
                observed: None,
                connection: None,
                restarted: false,
                password: None,
                role_passwords: None,
                backups: None,
                note: None,
            });
        }
        if foreign {
            return Err(RuntimeError::Apply(format!(
                "PostgresInstance {ns}/{} belongs to another instance",
                event.name
            )));
        }
        self.write(ns, event, existing.as_ref()).await?;
        let pi = self.converged(ns, &event.name).await?;
        let created = event.kind == EventKind::Create;
        let password = self.password(&pi).await;
        let role_passwords = self.role_passwords(&pi, &event.spec).await;
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
            observed: observed(&pi),
            connection: connection(&pi),
            restarted,
            password,
            role_passwords,
            backups: None,
            note: None,
        })
    }

    async fn observe_all(&self) -> Vec<Observation> {
        let api: Api<PostgresInstance> = match &self.placement {
            Placement::Namespace(ns) => self.instances(ns),
            Placement::PerOrg { .. } => Api::all(self.client.clone()),
        };
        let list = match api
            .list(&ListParams::default().labels(INSTANCE_ID_LABEL))
            .await
        {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, placement = ?self.placement, "listing PostgresInstances failed");
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
                    observed: observed(pi)?,
                    activity: None,
                    log: None,
                })
            })
            .collect()
    }
}

/// The resource for an event: name, identifying labels, generation
/// annotation and the spec. A `Restart` event sets a new `restartRequest`
/// (its generation), which the operator turns into a rolling restart; every
/// other event keeps the one `existing` has, so that it restarts nothing.
/// An `Update` event sets a new `convergeRequest`: even when the spec is
/// the same (a heal), the agent in the pod converges to it again.
pub fn desired(event: &DataPlaneEvent, existing: Option<&PostgresInstance>) -> PostgresInstance {
    let mut spec: crd::PostgresInstanceSpec = event.spec.clone().into();
    spec.restart_request = if event.kind == EventKind::Restart {
        Some(format!("generation-{}", event.generation))
    } else {
        existing.and_then(|pi| pi.spec.restart_request.clone())
    };
    spec.converge_request = if event.kind == EventKind::Update {
        Some(format!("generation-{}", event.generation))
    } else {
        existing.and_then(|pi| pi.spec.converge_request.clone())
    };
    let mut pi = PostgresInstance::new(&event.name, spec);
    pi.metadata.labels = Some(BTreeMap::from([
        (INSTANCE_ID_LABEL.to_owned(), event.instance_id.to_string()),
        (ORG_LABEL.to_owned(), label_value(&event.org)),
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

/// A label value for an organisation name: label values allow at most 63
/// of `[A-Za-z0-9._-]`, starting and ending alphanumeric; others become `-`.
fn label_value(org: &str) -> String {
    let value: String = org
        .chars()
        .take(63)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    value
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
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

/// What runs, as the agent in the pod observed it and the operator wrote
/// it into the status; `None` while the status has no observation (the
/// desired spec is never reported as what runs).
fn observed(pi: &PostgresInstance) -> Option<ObservedSpec> {
    Some(pi.status.as_ref()?.observed_spec.clone()?.into())
}

fn connection(pi: &PostgresInstance) -> Option<ConnectionInfo> {
    let c = pi.status.as_ref()?.connection.as_ref()?;
    Some(ConnectionInfo {
        members: Vec::new(),
        host: c.host.clone(),
        port: c.port,
        database: c.database.clone(),
        user: c.user.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_namespaces_are_dns_labels_and_distinct() {
        assert_eq!(org_namespace("pg", "acme"), "pg-acme");
        let odd = [
            "Acme",
            "acme corp",
            "ACME_corp",
            "ünïcode",
            "--",
            &"a".repeat(80),
        ];
        let mut seen = std::collections::HashSet::new();
        for org in odd {
            let ns = org_namespace("pg", org);
            assert!(ns.len() <= 63, "{ns}");
            assert!(ns.starts_with("pg-"), "{ns}");
            assert!(
                ns.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{ns}"
            );
            assert!(!ns.ends_with('-'), "{ns}");
            assert!(seen.insert(ns.clone()), "{org:?} collides: {ns}");
            assert_eq!(org_namespace("pg", org), ns, "stable");
        }
        // A lowercased twin of a plain name does not collide with it.
        assert_ne!(org_namespace("pg", "Acme"), org_namespace("pg", "acme"));
    }

    fn event(kind: EventKind, generation: i64) -> DataPlaneEvent {
        DataPlaneEvent {
            event_id: Uuid::new_v4(),
            instance_id: Uuid::new_v4(),
            org: "acme".into(),
            name: "orders".into(),
            generation,
            kind,
            spec: domain::InstanceSpec::default(),
            restart_predicted: false,
            restore_from: None,
            switchover_to: None,
        }
    }

    #[test]
    fn an_update_of_the_same_spec_changes_the_resource_so_that_the_pod_converges_again() {
        let created = desired(&event(EventKind::Create, 1), None);
        assert_eq!(created.spec.converge_request, None);
        // A heal re-sends the same spec: the resource still changes, so its
        // generation moves and the agent converges it.
        let healed = desired(&event(EventKind::Update, 2), Some(&created));
        assert_eq!(
            healed.spec.converge_request.as_deref(),
            Some("generation-2")
        );
        assert_ne!(healed.spec, created.spec);
        assert_eq!(healed.spec.restart_request, None, "nothing restarts");
        // Other events keep it: a stop or restart converges nothing more.
        let restarted = desired(&event(EventKind::Restart, 3), Some(&healed));
        assert_eq!(
            restarted.spec.converge_request.as_deref(),
            Some("generation-2")
        );
        assert_eq!(
            restarted.spec.restart_request.as_deref(),
            Some("generation-3")
        );
    }

    #[test]
    fn org_label_values_are_valid() {
        assert_eq!(label_value("acme"), "acme");
        assert_eq!(label_value("acme corp!"), "acme-corp");
        assert!(label_value(&"x".repeat(100)).len() <= 63);
    }
}
