//! `pgplane agent`: the instance agent as a long-running process, for the
//! pod the Kubernetes operator creates. It creates the data directory once,
//! runs Postgres, and converges it to the spec file the operator mounts from
//! a ConfigMap, again whenever the file or its generation changes. A server
//! that ends on its own (a crash, a kill) is started again at once, and
//! again with a growing delay while it will not start; the status counts
//! the restarts and says how the server last ended. It answers what Postgres
//! runs on a read-only status endpoint ([`status`]) that the operator reads.
//! SIGTERM stops Postgres with a fast shutdown.

mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use agent::{Agent, InstanceConfig, PostgresBinaries, RolePasswords, RunAs, Secret, Template};
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
    /// Directory holding the declared roles' passwords, one file per role
    /// named after it (the operator mounts the roles' Secret here). Read
    /// before every converge: a role whose file is not there yet is created
    /// without a password and is given it once the file appears.
    #[arg(long, env = "PGPLANE_ROLE_PASSWORDS_DIR")]
    pub role_passwords_dir: Option<PathBuf>,
    /// The OS user Postgres runs as when this process runs as root.
    #[arg(long, env = "PGPLANE_POSTGRES_USER", default_value = "postgres")]
    pub postgres_user: String,
    /// How often the spec file is checked for changes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub poll: Duration,
    /// File holding the resource generation of the spec file (the operator
    /// writes it into the same ConfigMap) [default: `generation` beside the
    /// spec file]. Reported on the status endpoint once converged.
    #[arg(long, env = "PGPLANE_GENERATION_FILE")]
    pub generation_file: Option<PathBuf>,
    /// Address of the read-only status endpoint (`GET /status`).
    #[arg(long, env = "PGPLANE_STATUS_ADDR", default_value = status::DEFAULT_ADDR)]
    pub status_addr: String,
}

/// The generation in `path`; `None` when the file is absent or unreadable
/// (a ConfigMap from an operator that does not write it).
fn read_generation(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_spec(path: &Path) -> anyhow::Result<InstanceSpec> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let spec: InstanceSpec = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid instance spec", path.display()))?;
    domain::validate_spec(&spec, "spec").map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(spec)
}

/// The declared roles' passwords in `dir`: one file per role, named after
/// it. Dot files (the kubelet's `..data` and its timestamped directories)
/// and empty or unreadable files are skipped; a missing directory holds
/// none.
fn read_role_passwords(dir: &Path) -> BTreeMap<String, Secret> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "role passwords unreadable");
            }
            return BTreeMap::new();
        }
    };
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let role = path.file_name()?.to_str()?.to_owned();
            if role.starts_with('.') || !path.is_file() {
                return None;
            }
            match std::fs::read_to_string(&path) {
                Ok(password) if !password.is_empty() => Some((role, Secret::new(password))),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(%role, error = %e, "role password file unreadable");
                    None
                }
            }
        })
        .collect()
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
    let agent = Arc::new(Agent::new(bins, run_as, config));
    // Listening before Postgres starts: by the time the pod is ready, the
    // operator can ask.
    let listener = tokio::net::TcpListener::bind(&args.status_addr)
        .await
        .with_context(|| format!("binding the status endpoint {}", args.status_addr))?;
    let converged = status::Shared::default();
    let stop_serving = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(status::serve(
        listener,
        agent.clone(),
        converged.clone(),
        stop_serving.clone(),
    ));
    let generation_file = args
        .generation_file
        .clone()
        .unwrap_or_else(|| args.spec_file.with_file_name("generation"));
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

    let mut applied_roles = None;
    let mut supervision = Supervision::default();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        supervise(&agent, &converged, &mut supervision).await;
        let role_passwords = args
            .role_passwords_dir
            .as_deref()
            .map(read_role_passwords)
            .unwrap_or_default();
        converge_to_file(
            &agent,
            &args.spec_file,
            &generation_file,
            &converged,
            &role_passwords,
            &mut applied_roles,
        )
        .await;
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
    stop_serving.cancel();
    let _ = server.await;
    tracing::info!("stopping postgres");
    agent.stop().await?;
    Ok(())
}

/// The first delay before starting again a server that would not start.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest delay between tries to start a server that will not start.
const LONGEST_RETRY: Duration = Duration::from_secs(60);

/// When the next try to start a server that would not start may be.
struct Supervision {
    not_before: Option<Instant>,
    backoff: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            not_before: None,
            backoff: FIRST_RETRY,
        }
    }
}

/// Starts the server again when it ended on its own, recording how it
/// ended and counting the restart; when it will not start, records why and
/// leaves the next try for later (1 s, doubling to a minute). A spec that
/// declares the server stopped is left stopped.
async fn supervise(agent: &Agent, progress: &status::Shared, supervision: &mut Supervision) {
    if agent.is_running().await.unwrap_or(true)
        || supervision.not_before.is_some_and(|t| Instant::now() < t)
    {
        return;
    }
    let mut converged = progress.converged.lock().await;
    if converged.spec.as_ref().is_some_and(|spec| spec.stopped) {
        return;
    }
    if let Some(status) = agent.take_exit() {
        // A signal leaves no line of its own; an exit's reason is the last
        // thing Postgres wrote.
        let mut exit = agent::describe_exit(status);
        if status.code().is_some() {
            if let Some(fatal) = agent.last_fatal() {
                exit = format!("{exit}: {fatal}");
            }
        }
        tracing::warn!(%exit, "postgres ended on its own; starting it again");
        converged.last_exit = Some(exit);
    }
    match agent.start().await {
        Ok(()) => {
            converged.restarts += 1;
            if converged
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with(START_FAILED))
            {
                converged.error = None;
            }
            *supervision = Supervision::default();
            tracing::info!(restarts = converged.restarts, "postgres running again");
        }
        Err(e) => {
            let error = format!("{:#}", anyhow::Error::new(e));
            tracing::warn!(%error, retry_in = ?supervision.backoff, "postgres would not start; will retry");
            converged.error = Some(format!("{START_FAILED}{error}"));
            supervision.not_before = Some(Instant::now() + supervision.backoff);
            supervision.backoff = (supervision.backoff * 2).min(LONGEST_RETRY);
        }
    }
}

/// How the status's error begins while the server will not start.
const START_FAILED: &str = "starting postgres: ";

/// Converges to the spec file when it, its generation or the role
/// passwords changed (`applied_roles`: the passwords of the last converge),
/// holding the status lock throughout, and records what was converged.
async fn converge_to_file(
    agent: &Agent,
    spec_file: &Path,
    generation_file: &Path,
    converged: &status::Shared,
    role_passwords: &BTreeMap<String, Secret>,
    applied_roles: &mut Option<BTreeMap<String, Secret>>,
) {
    let progress = converged;
    let mut converged = progress.converged.lock().await;
    // The kubelet swaps a ConfigMap's files all at once: a generation read
    // the same before and after the spec belongs to that spec.
    let generation = read_generation(generation_file);
    let spec = match read_spec(spec_file) {
        Ok(spec) => spec,
        Err(e) => {
            let error = format!("{e:#}");
            tracing::warn!(%error, "spec file unusable; keeping the last good spec");
            converged.error = Some(error);
            return;
        }
    };
    if read_generation(generation_file) != generation {
        return;
    }
    if converged.spec.as_ref() == Some(&spec)
        && converged.generation == generation
        && applied_roles.as_ref() == Some(role_passwords)
    {
        return;
    }
    let passwords = RolePasswords::new(role_passwords.clone());
    match agent.converge_with(&spec, false, &passwords).await {
        Ok(outcome) => {
            let with_password: Vec<&String> = role_passwords.keys().collect();
            tracing::info!(restarted = outcome.restarted, pending = ?outcome.pending_restart_before, ?generation, roles_with_password = ?with_password, "converged to the spec file");
            *applied_roles = Some(role_passwords.clone());
            converged.spec = Some(spec);
            converged.generation = generation;
            converged.error = None;
            progress
                .first_converged
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Err(e) => {
            let error = format!("{:#}", anyhow::Error::new(e));
            tracing::warn!(%error, "converging failed; will retry");
            converged.error = Some(format!("converging: {error}"));
        }
    }
}
