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
    /// Password of the `postgres` role, set when the data directory is
    /// created.
    #[arg(
        long,
        env = "POSTGRES_PASSWORD",
        hide_env_values = true,
        required_unless_present = "password_file",
        conflicts_with = "password_file"
    )]
    pub password: Option<String>,
    /// File holding the `postgres` role's password (the operator mounts the
    /// instance's Secret here). Applied at every start and again whenever
    /// the file changes, so a recreated Secret's password is the one that
    /// works, without a restart.
    #[arg(long, env = "PGPLANE_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
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

/// Where the password comes from: fixed at start, or a file to follow.
enum PasswordSource {
    Fixed(String),
    File(PathBuf),
}

impl PasswordSource {
    fn of(args: &AgentArgs) -> Self {
        match (&args.password_file, &args.password) {
            (Some(path), _) => Self::File(path.clone()),
            (None, Some(password)) => Self::Fixed(password.clone()),
            (None, None) => unreachable!("clap requires --password or --password-file"),
        }
    }

    fn read(&self) -> anyhow::Result<Secret> {
        let value = match self {
            Self::Fixed(password) => password.clone(),
            Self::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the password file {}", path.display()))?,
        };
        anyhow::ensure!(!value.is_empty(), "the password is empty");
        Ok(Secret::new(value))
    }
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
    let passwords = PasswordSource::of(&args);
    let password = passwords.read()?;
    agent.create(&template, &password).await?;
    agent.start().await?;
    if matches!(passwords, PasswordSource::File(_)) {
        // The data directory may predate the current Secret.
        agent.set_password(&password).await?;
    }
    let mut applied_password = password.expose().to_owned();
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
        if let PasswordSource::File(_) = passwords {
            match passwords.read() {
                Ok(password) if password.expose() != applied_password => {
                    match agent.set_password(&password).await {
                        Ok(()) => {
                            tracing::info!("applied the changed password file");
                            applied_password = password.expose().to_owned();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "setting the password failed; will retry")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "password file unusable; keeping the current password")
                }
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
