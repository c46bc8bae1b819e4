//! `pgplane agent`: the instance agent as a long-running process, for the
//! pod the Kubernetes operator creates. It creates the data directory once,
//! runs Postgres, and converges it to the spec file the operator mounts from
//! a ConfigMap, again whenever the file changes. SIGTERM stops Postgres
//! with a fast shutdown.

use std::path::PathBuf;
use std::time::Duration;

use agent::{Agent, InstanceConfig, PostgresBinaries, RunAs, Secret, Template};
use anyhow::Context;
use domain::InstanceSpec;

use crate::up::{parse_duration, shutdown_signal};

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The data directory (created from a template on first start).
    #[arg(long, env = "PGDATA")]
    pub data_dir: PathBuf,
    /// JSON file holding the InstanceSpec to converge to (the operator mounts
    /// it from the instance's ConfigMap).
    #[arg(long, env = "PGPLANE_SPEC_FILE")]
    pub spec_file: PathBuf,
    /// Port Postgres listens on.
    #[arg(long, env = "PGPLANE_PORT", default_value_t = 5432)]
    pub port: u16,
    /// `listen_addresses` (all interfaces in a pod).
    #[arg(long, default_value = "*")]
    pub listen_address: String,
    /// Password of the `postgres` role (from the instance's Secret).
    #[arg(long, env = "POSTGRES_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// The OS user Postgres runs as when this process runs as root.
    #[arg(long, env = "PGPLANE_POSTGRES_USER", default_value = "postgres")]
    pub postgres_user: String,
    /// How often the spec file is checked for changes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub poll: Duration,
}

fn read_spec(path: &std::path::Path) -> anyhow::Result<InstanceSpec> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let spec: InstanceSpec = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid instance spec", path.display()))?;
    domain::validate_spec(&spec, "spec").map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(spec)
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let bins = PostgresBinaries::discover()?;
    let run_as = RunAs::for_this_process(&args.postgres_user)?;
    let parent = args
        .data_dir
        .parent()
        .context("the data directory needs a parent directory")?;
    let template = Template::ensure(&parent.join("pgplane-template"), &bins, &run_as).await?;
    let mut config = InstanceConfig::new(&args.data_dir, args.port);
    config.listen_address = args.listen_address.clone();
    let agent = Agent::new(bins, run_as, config);
    agent
        .create(&template, &Secret::new(args.password.clone()))
        .await?;
    agent.start().await?;
    tracing::info!(data_dir = %args.data_dir.display(), port = args.port, "postgres running");

    let mut applied: Option<InstanceSpec> = None;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        match read_spec(&args.spec_file) {
            Ok(spec) if applied.as_ref() != Some(&spec) => match agent.converge(&spec, false).await
            {
                Ok(outcome) => {
                    tracing::info!(restarted = outcome.restarted, pending = ?outcome.pending_restart_before, "converged to the spec file");
                    applied = Some(spec);
                }
                Err(e) => tracing::warn!(error = %e, "converging failed; will retry"),
            },
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "spec file unusable; keeping the last good spec")
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(args.poll) => {}
        }
    }
    tracing::info!("stopping postgres");
    agent.stop().await?;
    Ok(())
}
