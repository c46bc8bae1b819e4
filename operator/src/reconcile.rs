//! One reconcile of one `PostgresInstance`: level-triggered and idempotent.
//! Each step is a named function; the status is computed purely in
//! [`crate::conditions`] and written only when it changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crd::PostgresInstance;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as Finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, instrument, warn};

use crate::admin::Metrics;
use crate::conditions::{self, Rollout};
use crate::pod_status::{self, PodObservation};
use crate::{builders, Error, Result, Settings, VolumePolicy, FIELD_MANAGER, FINALIZER};

/// Requeue while the pods are not ready yet ("not ready" is not an error).
/// A safety net only: every change of the StatefulSet's status triggers a
/// reconcile through the watch on owned children, so a short interval would
/// only add load (1,000 starting instances at 5 s were ~200 reconciles/s).
pub const NOT_READY_REQUEUE: Duration = Duration::from_secs(30);
/// Re-check while the agent in a ready pod has not converged the current
/// generation yet: nothing it does triggers a watch, and it follows its
/// ConfigMap within the kubelet's sync period. (The periodic re-check of a
/// converged instance is [`Settings::resync`].)
pub const AGENT_REQUEUE: Duration = Duration::from_secs(2);
/// First retry after an error; doubles per consecutive failure up to the max.
pub const ERROR_BACKOFF_BASE: Duration = Duration::from_millis(500);
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(60);

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per instance, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            settings,
            metrics,
            failures: Mutex::default(),
        }
    }
}

#[instrument(skip_all, fields(instance = %conditions::key(&pi), generation = ?pi.metadata.generation))]
pub async fn reconcile(pi: Arc<PostgresInstance>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled();
    let ns = pi
        .namespace()
        .ok_or(Error::MissingMetadata("a namespace"))?;
    let api: Api<PostgresInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let action = finalizer(&api, FINALIZER, pi, |event| async {
        match event {
            Finalizer::Apply(pi) => apply(&pi, &ctx).await,
            Finalizer::Cleanup(pi) => cleanup(&pi, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        // Our own errors come back as they were (their kind and message
        // name the failing call); only the finalizer's own calls are wrapped.
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    })?;
    Ok(action)
}

/// Errors go here: a metric, a log line, and a jittered exponential backoff.
pub fn error_policy(pi: Arc<PostgresInstance>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error);
    let key = conditions::key(&pi);
    let attempt = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(attempt, rand::random::<f64>());
    warn!(instance = %key, attempt, ?delay, error = %error, source = ?std::error::Error::source(error), "reconcile failed");
    Action::requeue(delay)
}

/// The reconcile error backoff: [`jittered_exponential`] from
/// [`ERROR_BACKOFF_BASE`] up to [`ERROR_BACKOFF_MAX`].
pub fn backoff(attempt: u32, jitter01: f64) -> Duration {
    jittered_exponential(ERROR_BACKOFF_BASE, ERROR_BACKOFF_MAX, attempt, jitter01)
}

/// `base · 2^(attempt-1)`, capped at `max`, times a jitter factor in
/// [0.5, 1.5) (`jitter01` in [0, 1)). Shared by reconcile errors and watches.
pub fn jittered_exponential(
    base: Duration,
    max: Duration,
    attempt: u32,
    jitter01: f64,
) -> Duration {
    let exp = base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    exp.min(max).mul_f64(0.5 + jitter01.clamp(0.0, 1.0))
}

async fn apply(pi: &PostgresInstance, ctx: &Context) -> Result<Action> {
    match converge(pi, ctx).await {
        Ok(action) => {
            ctx.failures
                .lock()
                .expect("failures lock")
                .remove(&conditions::key(pi));
            Ok(action)
        }
        Err(error) => {
            let status = conditions::degraded_status(
                pi,
                degraded_reason(&error),
                &error_chain(&error),
                &now(),
            );
            if let Err(status_error) = write_status(pi, status, ctx).await {
                warn!(error = %status_error, "could not record Degraded");
            }
            Err(error)
        }
    }
}

async fn converge(pi: &PostgresInstance, ctx: &Context) -> Result<Action> {
    ensure_secret(pi, ctx).await?;
    ensure_roles_secret(pi, ctx).await?;
    apply_child(pi, ctx, builders::configmap(pi)).await?;
    let desired = builders::statefulset(pi, &ctx.settings);
    let restart_scheduled = restart_scheduled(pi, ctx, &desired).await?;
    if restart_scheduled {
        info!("restart-only parameters changed: rolling restart");
    }
    let statefulset = apply_child(pi, ctx, desired).await?;
    apply_service(pi, ctx).await?;
    let rollout = Rollout::of(&statefulset);
    let pod = observe_pod(pi, ctx).await?;
    let status = conditions::converged_status(pi, &rollout, &pod, restart_scheduled, &now());
    write_status(pi, status, ctx).await?;
    Ok(if !rollout.complete() || conditions::stopping(pi, &pod) {
        Action::requeue(NOT_READY_REQUEUE)
    } else if conditions::agent_behind(pi, &pod).is_some() {
        Action::requeue(AGENT_REQUEUE)
    } else {
        Action::requeue(ctx.settings.resync)
    })
}

/// What the agent in the instance's pod reports.
async fn observe_pod(pi: &PostgresInstance, ctx: &Context) -> Result<PodObservation> {
    let pod = pod_status::observe(&ctx.client, pi)
        .await
        .map_err(|source| Error::Get {
            kind: "Pod",
            namespace: pi.namespace().unwrap_or_default(),
            name: pod_status::pod_name(pi),
            source,
        })?;
    if let PodObservation::Unreachable(why) = &pod {
        debug!(%why, "the agent in the pod did not answer");
    }
    if conditions::agent_behind(pi, &pod).is_some() {
        pod_status::nudge(&ctx.client, pi)
            .await
            .map_err(|source| Error::Apply {
                kind: "Pod",
                namespace: pi.namespace().unwrap_or_default(),
                name: pod_status::pod_name(pi),
                source,
            })?;
    }
    Ok(pod)
}

/// Whether applying `desired` changes the restart hash of a running pod
/// template (a new StatefulSet starts its pods with the right config).
async fn restart_scheduled(
    pi: &PostgresInstance,
    ctx: &Context,
    desired: &StatefulSet,
) -> Result<bool> {
    let api: Api<StatefulSet> = child_api(pi, ctx);
    let name = builders::statefulset_name(pi);
    let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
        kind: "StatefulSet",
        namespace: pi.namespace().unwrap_or_default(),
        name,
        source,
    })?;
    Ok(existing.is_some_and(|s| template_restart_hash(&s) != template_restart_hash(desired)))
}

fn template_restart_hash(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(builders::RESTART_HASH_ANNOTATION)
        .cloned()
}

/// The Secret is created once with a new password and never applied again,
/// so the password is never rotated by accident. If someone deletes it, a new
/// one is generated: the old password is not kept anywhere else.
async fn ensure_secret(pi: &PostgresInstance, ctx: &Context) -> Result<()> {
    let api: Api<Secret> = child_api(pi, ctx);
    let name = builders::secret_name(pi);
    let ns = pi.namespace().unwrap_or_default();
    let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
        kind: "Secret",
        namespace: ns.clone(),
        name: name.clone(),
        source,
    })?;
    if existing.is_some() {
        return Ok(());
    }
    let secret = builders::secret(pi, &builders::generate_password());
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(secret = %name, "created credentials");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: "Secret",
            namespace: ns,
            name,
            source,
        }),
    }
}

/// The declared roles' Secret: created with a password for each present
/// role, then only given keys for roles added and rid of those of roles no
/// longer present; a stored password is never replaced. Written before the
/// ConfigMap, so a new role's password reaches the pod with (or before) the
/// spec that declares it. The update carries the resourceVersion read, so
/// a concurrent writer makes it fail and the reconcile retry from what is
/// stored, instead of being overwritten.
async fn ensure_roles_secret(pi: &PostgresInstance, ctx: &Context) -> Result<()> {
    let api: Api<Secret> = child_api(pi, ctx);
    let name = builders::roles_secret_name(pi);
    let ns = pi.namespace().unwrap_or_default();
    let failed = |source| Error::Apply {
        kind: "Secret",
        namespace: ns.clone(),
        name: name.clone(),
        source,
    };
    let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
        kind: "Secret",
        namespace: ns.clone(),
        name: name.clone(),
        source,
    })?;
    let stored = existing.as_ref().map(stored_passwords).unwrap_or_default();
    let wanted = builders::role_passwords(pi, &stored, builders::generate_password);
    let mut secret = builders::roles_secret(pi, &wanted);
    let Some(current) = existing else {
        return match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                info!(secret = %name, roles = ?wanted.keys().collect::<Vec<_>>(), "created role passwords");
                Ok(())
            }
            // Another writer was first; its Secret triggers the next reconcile.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(source) => Err(failed(source)),
        };
    };
    if stored == wanted && current.data.as_ref().map_or(0, |d| d.len()) == wanted.len() {
        return Ok(());
    }
    let added: Vec<&String> = wanted.keys().filter(|r| !stored.contains_key(*r)).collect();
    let removed: Vec<&String> = stored.keys().filter(|r| !wanted.contains_key(*r)).collect();
    secret.metadata.resource_version = current.metadata.resource_version;
    api.replace(&name, &PostParams::default(), &secret)
        .await
        .map_err(failed)?;
    info!(secret = %name, ?added, ?removed, "updated role passwords");
    Ok(())
}

/// The usable passwords in the roles' Secret (UTF-8, not empty); any other
/// value is replaced by a new password.
fn stored_passwords(secret: &Secret) -> std::collections::BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(role, value)| {
            let password = String::from_utf8(value.0.clone()).ok()?;
            (!password.is_empty()).then(|| (role.clone(), password))
        })
        .collect()
}

/// Applies the headless Service. A Service from an older operator that has
/// a cluster IP cannot be changed to headless in place (`clusterIP` is
/// immutable): it is deleted and created again, which only moves its DNS
/// name from the cluster IP to the pod.
async fn apply_service(pi: &PostgresInstance, ctx: &Context) -> Result<Service> {
    match apply_child(pi, ctx, builders::service(pi)).await {
        Err(Error::Apply {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 422 && status.message.contains("clusterIP") => {
            info!(%status.message, "replacing a Service that has a cluster IP with a headless one");
            let api: Api<Service> = child_api(pi, ctx);
            let name = builders::service_name(pi);
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(|source| Error::Delete {
                    kind: "Service",
                    namespace: pi.namespace().unwrap_or_default(),
                    name,
                    source,
                })?;
            apply_child(pi, ctx, builders::service(pi)).await
        }
        other => other,
    }
}

/// Server-side apply with the operator's field manager.
async fn apply_child<K>(pi: &PostgresInstance, ctx: &Context, child: K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = child_api(pi, ctx);
    let name = child.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&child),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: short_kind::<K>(),
        namespace: pi.namespace().unwrap_or_default(),
        name,
        source,
    })
}

/// Deletes the children explicitly (not only through owner references, so
/// deletion completes even where no garbage collector runs) and keeps the
/// volumes: PersistentVolumeClaims outlive the instance.
async fn cleanup(pi: &PostgresInstance, ctx: &Context) -> Result<Action> {
    if let Err(error) = write_status(pi, conditions::deleting_status(pi), ctx).await {
        warn!(error = %error, "could not record Deleting");
    }
    delete_child::<StatefulSet>(pi, ctx, &builders::statefulset_name(pi)).await?;
    delete_child::<Service>(pi, ctx, &builders::service_name(pi)).await?;
    delete_child::<ConfigMap>(pi, ctx, &builders::configmap_name(pi)).await?;
    delete_child::<Secret>(pi, ctx, &builders::secret_name(pi)).await?;
    delete_child::<Secret>(pi, ctx, &builders::roles_secret_name(pi)).await?;
    if ctx.settings.volumes_on_delete == VolumePolicy::Delete {
        delete_volumes(pi, ctx).await?;
    }
    info!(volumes = ?ctx.settings.volumes_on_delete, "children deleted");
    Ok(Action::await_change())
}

/// Deletes the instance's PersistentVolumeClaims: those of its
/// StatefulSet's volume claim template, found by the instance's labels.
/// A claim still mounted by a terminating pod is removed once that pod is
/// gone (the claim's protection finalizer holds it until then).
async fn delete_volumes(pi: &PostgresInstance, ctx: &Context) -> Result<()> {
    let api: Api<PersistentVolumeClaim> = child_api(pi, ctx);
    let selector = builders::labels(pi)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let claims = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Delete {
            kind: "PersistentVolumeClaim",
            namespace: pi.namespace().unwrap_or_default(),
            name: selector.clone(),
            source,
        })?;
    for claim in claims {
        delete_child::<PersistentVolumeClaim>(pi, ctx, &claim.name_any()).await?;
    }
    Ok(())
}

async fn delete_child<K>(pi: &PostgresInstance, ctx: &Context, name: &str) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = child_api(pi, ctx);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: short_kind::<K>(),
            namespace: pi.namespace().unwrap_or_default(),
            name: name.to_owned(),
            source,
        }),
    }
}

async fn write_status(
    pi: &PostgresInstance,
    status: crd::PostgresInstanceStatus,
    ctx: &Context,
) -> Result<()> {
    if pi.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let ns = pi.namespace().unwrap_or_default();
    let api: Api<PostgresInstance> = Api::namespaced(ctx.client.clone(), &ns);
    // Server-side apply of the whole status: a field the new status leaves
    // out (a server that stopped has no start time, a parameter no longer
    // observed) is removed, where a merge patch would keep the old value.
    let patch = serde_json::json!({
        "apiVersion": PostgresInstance::api_version(&()),
        "kind": PostgresInstance::kind(&()),
        "status": status,
    });
    api.patch_status(
        &pi.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Status {
        namespace: ns,
        name: pi.name_any(),
        source,
    })?;
    Ok(())
}

fn child_api<K>(pi: &PostgresInstance, ctx: &Context) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(ctx.client.clone(), &pi.namespace().unwrap_or_default())
}

fn short_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "StatefulSet" => "StatefulSet",
        "Service" => "Service",
        "Secret" => "Secret",
        "ConfigMap" => "ConfigMap",
        "PersistentVolumeClaim" => "PersistentVolumeClaim",
        _ => "object",
    }
}

fn degraded_reason(error: &Error) -> &'static str {
    match error {
        Error::Apply { .. } => "ApplyFailed",
        Error::Get { .. } => "ReadFailed",
        Error::Delete { .. } => "DeleteFailed",
        Error::Status { .. } => "StatusFailed",
        Error::MissingMetadata(_) => "InvalidObject",
        Error::Finalizer(_) => "FinalizerFailed",
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
