//! Wiring: the watch on `PostgresInstance` (generation and finalizer
//! predicates, so status writes do not retrigger), the owned children, and
//! graceful shutdown on a cancellation token.

use std::sync::Arc;

use crd::PostgresInstance;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::runtime::controller::Controller;
use kube::runtime::{predicates, reflector, watcher, Predicate, WatchStreamExt};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::admin::Metrics;
use crate::reconcile::{error_policy, reconcile, Context};
use crate::Settings;

/// Runs the controller until `shutdown` is cancelled.
pub async fn run_controller(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let instances: Api<PostgresInstance> = api(&client, &settings);
    let (reader, writer) = reflector::store();
    let triggers = watcher(instances, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            Default::default(),
        );
    let children =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=pgplane-operator");
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.clone(),
        metrics.clone(),
    ));
    info!(namespace = ?settings.namespace, image = %settings.instance_image, "operator started");
    metrics.set_ready(true);
    Controller::for_stream(triggers, reader)
        .owns(api::<StatefulSet>(&client, &settings), children.clone())
        .owns(api::<Service>(&client, &settings), children.clone())
        .owns(api::<Secret>(&client, &settings), children.clone())
        .owns(api::<ConfigMap>(&client, &settings), children)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(instance = %obj.name, "reconciled"),
                Err(error) => debug!(%error, "controller event"),
            }
        })
        .await;
    metrics.set_ready(false);
    info!("operator stopped");
}

fn api<K>(client: &Client, settings: &Settings) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match &settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
