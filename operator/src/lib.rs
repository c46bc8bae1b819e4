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
pub mod reconcile;

pub use config::{Config, Settings};
pub use controller::run_controller;
pub use error::{Error, Result};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "pgplane-operator";
/// Finalizer that deletes the children explicitly and reports `Deleting`.
pub const FINALIZER: &str = "pgplane.io/cleanup";

/// Runs the operator until SIGINT/SIGTERM: the admin endpoint and the
/// controller, both owned and awaited.
pub async fn run(config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let client = kube::Client::try_default()
        .await
        .context("building a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let metrics = std::sync::Arc::new(admin::Metrics::default());
    let listener = tokio::net::TcpListener::bind(&config.admin_addr)
        .await
        .with_context(|| format!("binding the admin endpoint {}", config.admin_addr))?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(admin::serve(listener, metrics.clone(), shutdown.clone()));
    tasks.spawn(run_controller(
        client,
        config.settings(),
        metrics,
        shutdown.clone(),
    ));
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal.cancel();
    });
    while tasks.join_next().await.is_some() {
        shutdown.cancel();
    }
    Ok(())
}
