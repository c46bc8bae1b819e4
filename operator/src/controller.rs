//! Wiring: the watch on `PostgresInstance` (generation and finalizer
//! predicates, so status writes do not retrigger), the owned children, and
//! graceful shutdown on a cancellation token.
//!
//! Watches back off with [`WatchBackoff`], capped at a few seconds: after an
//! API server restart every watch fails once with `410 Gone` and must relist,
//! and kube-runtime's default (one 30 s-capped backoff shared by all trigger
//! watches, which pauses all of them and grows with each watch's 410 in
//! turn) delayed that relist — and every reconcile that waits for a watch
//! event, such as the one after adding the finalizer — by up to a minute.
//! The shared trigger backoff is therefore capped at one second; the
//! instance watch has its own, capped at five.

use std::sync::Arc;
use std::time::Duration;

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
use crate::reconcile::{error_policy, jittered_exponential, reconcile, Context};
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
        .backoff(WatchBackoff::new(WatchBackoff::MIN, WatchBackoff::MAX))
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
    info!(namespace = ?settings.namespace, image = %settings.instance_image, concurrency = settings.concurrency, "operator started");
    metrics.set_ready(true);
    Controller::for_stream(triggers, reader)
        .owns(api::<StatefulSet>(&client, &settings), children.clone())
        .owns(api::<Service>(&client, &settings), children.clone())
        .owns(api::<Secret>(&client, &settings), children.clone())
        .owns(api::<ConfigMap>(&client, &settings), children)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        .trigger_backoff(WatchBackoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
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

/// Exponential backoff for watch errors: `min` doubling to at most `max`,
/// with ±50% jitter ([`jittered_exponential`]); the stream resets it on the
/// next successful event.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    min: Duration,
    max: Duration,
    /// Consecutive errors so far.
    attempt: u32,
}

impl WatchBackoff {
    pub const MIN: Duration = Duration::from_millis(250);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            attempt: 0,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.attempt = self.attempt.saturating_add(1);
        Some(jittered_exponential(
            self.min,
            self.max,
            self.attempt,
            rand::random::<f64>(),
        ))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
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

#[cfg(test)]
mod tests {
    use kube::runtime::utils::Backoff as _;

    use super::*;

    #[test]
    fn watch_backoff_grows_to_its_cap_and_resets() {
        let mut b = WatchBackoff::new(WatchBackoff::MIN, WatchBackoff::MAX);
        let delays: Vec<Duration> = (&mut b).take(10).collect();
        assert!(delays[0] >= WatchBackoff::MIN / 2 && delays[0] < WatchBackoff::MIN * 3 / 2);
        assert!(
            delays.iter().all(|d| *d < WatchBackoff::MAX * 3 / 2),
            "{delays:?}"
        );
        assert!(delays[9] >= WatchBackoff::MAX / 2, "{delays:?}");
        b.reset();
        assert!(b.next().unwrap() < WatchBackoff::MIN * 3 / 2);
    }
}
