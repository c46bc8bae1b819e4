//! The pgplane operator: a kube-runtime controller that converges each
//! `PostgresInstance` to a StatefulSet (the pod runs the instance image:
//! the instance agent in front of `postgres`), a headless Service, a
//! ConfigMap with the spec the agent applies, and a Secret with a generated
//! password — and reports phase and conditions in the status.
//!
//! Everything here is a library; `main.rs` only parses [`Config`] and calls
//! [`run`].

pub mod admin;
pub mod builders;
pub mod conditions;
mod config;
pub mod controller;
mod error;
pub mod leader;
pub mod pod_status;
pub mod reconcile;

pub use config::{Config, Settings, VolumePolicy};
pub use controller::run_controller;
pub use error::{Error, Result};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "pgplane-operator";
/// Finalizer that deletes the children explicitly and reports `Deleting`.
pub const FINALIZER: &str = "pgplane.io/cleanup";

/// Runs the operator until SIGINT/SIGTERM: the admin endpoint and the
/// controller (while this replica holds the leader Lease), both owned and
/// awaited. Losing the Lease is an error: the process exits and its
/// restart makes it a candidate again with fresh caches.
pub async fn run(config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let lease = config.lease().map_err(anyhow::Error::msg)?;
    let client = kube::Client::try_default()
        .await
        .context("building a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let metrics = std::sync::Arc::new(admin::Metrics::default());
    let listener = tokio::net::TcpListener::bind(&config.admin_addr)
        .await
        .with_context(|| format!("binding the admin endpoint {}", config.admin_addr))?;
    let admin = tokio::spawn(admin::serve(listener, metrics.clone(), shutdown.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        signal.cancel();
    });
    let result = run_elected(client, config.settings(), lease, metrics, shutdown.clone()).await;
    shutdown.cancel();
    let _ = admin.await;
    Ok(result?)
}

/// The controller behind leader election: waits for the Lease (`lease`
/// `None`: no election), runs the controller while renewing it, releases it
/// on shutdown. Returns `Err` only when the Lease was lost.
pub async fn run_elected(
    client: kube::Client,
    settings: Settings,
    lease: Option<leader::LeaseSettings>,
    metrics: std::sync::Arc<admin::Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::result::Result<(), leader::LostLease> {
    let Some(lease) = lease else {
        metrics.set_leader(true);
        run_controller(client, settings, metrics, shutdown).await;
        return Ok(());
    };
    let mut elector = leader::Elector::new(client.clone(), lease);
    tracing::info!(lease = %elector.settings().name, namespace = %elector.settings().namespace,
        identity = %elector.settings().identity, "waiting for the leader Lease");
    // A standby is ready too: it is healthy and will lead when needed.
    metrics.set_ready(true);
    if !elector.acquire(&shutdown).await {
        return Ok(());
    }
    metrics.set_leader(true);
    let leading = shutdown.child_token();
    let mut controller = tokio::spawn(run_controller(
        client,
        settings,
        metrics.clone(),
        leading.clone(),
    ));
    let kept = tokio::select! {
        kept = elector.keep(&leading) => kept,
        _ = &mut controller => Ok(()),
    };
    leading.cancel();
    if !controller.is_finished() {
        let _ = controller.await;
    }
    metrics.set_leader(false);
    if kept.is_ok() {
        elector.release().await;
    }
    kept
}
