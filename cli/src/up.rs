//! `pgplane up`: the embedded default. One process runs an embedded state
//! Postgres, the control plane and a conductor with the local runtime.
//!
//! Layout of the data directory:
//! - `state/` (+ `state.sock/`): the control plane's own Postgres;
//! - `state.json`: its port and password (mode 0600);
//! - `instances/`: the local runtime (template and instance data directories);
//! - `pgplane.env`: `PGPLANE_ENDPOINT` and `PGPLANE_TOKEN` (mode 0600);
//! - `up.lock`: held while `pgplane up` runs on this directory.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent::{Agent, InstanceConfig, PostgresBinaries, RunAs, Secret, Template};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The organisation of the admin token `up` creates.
pub const DEFAULT_ORG: &str = "default";
pub const DATA_PLANE: &str = "local";

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Where everything is kept: the state Postgres, the instances'
    /// data directories, pgplane.env. Created if missing; a second `up` on
    /// the same directory adopts what the first one left. Default:
    /// /var/lib/pgplane when run as root (the unprivileged OS users Postgres
    /// runs as can reach it wherever the checkout is), ./pgplane-data
    /// otherwise.
    #[arg(long, env = "PGPLANE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the control plane's HTTP API.
    #[arg(long, env = "PGPLANE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The OS user that runs Postgres when pgplane runs as root (Postgres
    /// refuses to run as root). Created as a system user if missing.
    /// Ignored when pgplane does not run as root.
    #[arg(long, env = "PGPLANE_POSTGRES_USER", default_value = "postgres")]
    pub postgres_user: String,
    /// `listen_addresses` of the instances.
    #[arg(long, default_value = "127.0.0.1")]
    pub instance_listen_address: String,
    /// Ports the instances listen on, `FIRST-LAST`. Keep it below the
    /// kernel's ephemeral range (32768-60999 on Linux), where other
    /// programs' outgoing connections would take ports instances need.
    #[arg(long, value_name = "FIRST-LAST", default_value = "20000-29999", value_parser = parse_port_range)]
    pub instance_ports: std::ops::RangeInclusive<u16>,
    /// Default backup repository: DATA_DIR/backups.
    #[command(flatten)]
    pub backups: crate::backup_repo::BackupRepoArgs,
    /// Run each server in a cgroup limited to its `resources.memory`
    /// (needs root and the kernel's memory controller).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub enforce_memory: bool,
    /// How long the primary of an instance with standbys may not answer
    /// before its most advanced standby replaces it. A primary whose server
    /// is gone is replaced at once.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub failover_timeout: Duration,
    /// How long the conductor hides a message it is working on; after a
    /// crash the message is redelivered this long after it was read.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub visibility_timeout: Duration,
    /// How often every instance is re-observed (drift shows within this).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// How long the data plane may owe a report before the desired spec is sent again.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub resend_after: Duration,
    /// How many live (not deleted) instances one organisation may have;
    /// creating one more is refused (403). 0 for no limit.
    #[arg(long, env = "PGPLANE_MAX_INSTANCES_PER_ORG", default_value_t = reconciler::DEFAULT_MAX_INSTANCES_PER_ORG)]
    pub max_instances_per_org: u32,
}

/// Parses a duration flag in [`domain::duration`]'s grammar (`90s`,
/// `1.5m`, `1h30m`, a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    domain::duration::parse(s).map_err(|e| e.to_string())
}

/// Parses `20000-29999` (or one port).
pub fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                format!("invalid port range {s:?}: expected FIRST-LAST, e.g. 20000-29999")
            })
    };
    let (first, last) = (port(a)?, port(b)?);
    if first > last {
        return Err(format!("invalid port range {s:?}: {first} is after {last}"));
    }
    Ok(first..=last)
}

#[derive(Serialize, Deserialize)]
struct StateDb {
    port: u16,
    password: String,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = prepare_data_dir(&args.data_dir.clone().unwrap_or_else(default_data_dir))?;
    let _lock = lock_data_dir(&data_dir)?;
    // Bound before anything starts: a busy address fails here, with
    // nothing to stop, and no other program can take it meanwhile.
    let listener = bind_listen(args.listen)?;
    let bins = PostgresBinaries::discover()?;
    let run_as = RunAs::for_this_process(&args.postgres_user)?;
    let instances_root = data_dir.join("instances");
    std::fs::create_dir_all(&instances_root)
        .with_context(|| format!("creating {}", instances_root.display()))?;
    let template = Template::ensure(&instances_root.join("template"), &bins, &run_as).await?;

    eprintln!(
        "starting the state Postgres in {}",
        data_dir.join("state").display()
    );
    let (state_agent, database_url) = start_state_db(&data_dir, &bins, &run_as, &template).await?;
    // Whatever happens from here on, the state Postgres is stopped before returning.
    let served = serve(&args, &data_dir, listener, &database_url).await;
    let stopped = state_agent
        .stop()
        .await
        .context("stopping the state Postgres");
    served?;
    stopped?;
    eprintln!("stopped");
    Ok(())
}

/// Binds `--listen`; a busy address is refused with a hint of another one.
pub fn bind_listen(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    match reconciler::bind(addr) {
        Ok(listener) => Ok(listener),
        Err(reconciler::StartError::Bind { source, .. })
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            let other = SocketAddr::new(addr.ip(), addr.port().checked_add(1).unwrap_or(8081));
            bail!(
                "cannot listen on {addr}: the address is already in use (by another program, \
                 or another pgplane); choose another one, e.g. --listen {other}"
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs the control plane and the conductor on the started state Postgres
/// until Ctrl-C, then stops every instance.
async fn serve(
    args: &UpArgs,
    data_dir: &Path,
    listener: std::net::TcpListener,
    database_url: &str,
) -> anyhow::Result<()> {
    let pool = reconciler::connect(database_url).await?;
    reconciler::prepare_database(&pool, DATA_PLANE).await?;
    // Secrets at rest are sealed with a key kept beside, not in, the state
    // database; published before the conductor can store a password.
    let keyring = queue::sealed::Keyring::load_or_create(&key_file(data_dir))?;
    keyring.publish(&pool).await?;

    let token = admin_token(&pool, data_dir).await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    write_env_file(data_dir, &endpoint, &token)?;

    let runtime = Arc::new(
        conductor::LocalRuntime::open(conductor::LocalSettings {
            root: data_dir.join("instances"),
            postgres_user: args.postgres_user.clone(),
            listen_address: args.instance_listen_address.clone(),
            template: None,
            create_pause: None,
            restart_backoff: conductor::local::DEFAULT_RESTART_BACKOFF,
            enforce_memory: args.enforce_memory,
            ports: args.instance_ports.clone(),
            backup_repository: args.backups.repository(Some(data_dir.join("backups")))?,
            failover_timeout: args.failover_timeout,
        })
        .await?,
    );
    let adopted = runtime.adopt_all().await;

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let settings = reconciler::Settings {
        default_data_plane: DATA_PLANE.to_owned(),
        resend_every: Duration::from_secs(5),
        resend_after: args.resend_after,
        git_cache_dir: data_dir.join("git-cache"),
        source_policy: reconciler::SourcePolicy::allow_all(),
        max_instances_per_org: args.max_instances_per_org,
        keyring,
    };
    let control = tasks.spawn(reconciler::run(
        pool.clone(),
        listener,
        settings,
        cancel.clone(),
        Some(ready_tx),
    ));
    let mut conductor_settings = conductor::Settings::new(DATA_PLANE);
    conductor_settings.visibility_timeout = args.visibility_timeout;
    conductor_settings.resync_every = args.resync_interval;
    let queues = queue::Queues::new(pool.clone()).await;
    // Registered before the banner, so the first create is checked against
    // what the data plane offers (the conductor registers again as it starts).
    {
        use conductor::Runtime;
        let catalog = runtime.extension_catalog().await?;
        queues
            .register_data_plane_catalog(DATA_PLANE, &catalog)
            .await?;
    }
    let conductor_task = tasks.spawn(conductor::run(
        queues,
        runtime.clone(),
        conductor_settings,
        cancel.clone(),
    ));
    tasks.close();

    let ready = ready_rx.await;
    if let Ok(addr) = ready {
        print_banner(addr, &data_dir.join("pgplane.env"), adopted);
        tokio::select! {
            _ = shutdown_signal() => eprintln!("shutting down"),
            _ = cancel.cancelled() => eprintln!("a component stopped; shutting down"),
        }
    }
    cancel.cancel();
    tasks.wait().await;
    let control = control.await;
    if let Ok(Err(e)) = conductor_task.await {
        eprintln!("conductor: {e}");
    }
    eprintln!("stopping instances");
    runtime.stop_all().await;
    pool.close().await;
    match ready {
        Ok(_) => Ok(()),
        Err(_) => {
            control.context("control plane task")??;
            bail!("the control plane stopped before it was ready")
        }
    }
}

fn print_banner(addr: SocketAddr, env_file: &Path, adopted: usize) {
    println!("pgplane is up");
    println!("  endpoint:  http://{addr}");
    // The token itself is never printed: stdout often ends up in logs.
    println!(
        "  token:     in {} (PGPLANE_TOKEN, mode 0600)",
        env_file.display()
    );
    if adopted > 0 {
        println!("  adopted:   {adopted} instance(s) from the previous run");
    }
    println!(
        "  try:       set -a; . {}; set +a; pgplane instance create orders --wait",
        env_file.display()
    );
    println!(
        "Press Ctrl-C to stop (instances are stopped and come back on the next `pgplane up`)."
    );
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    // Postgres (as the unprivileged user) must traverse it; nothing in it is world-readable.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("setting permissions on {}", dir.display()))?;
    Ok(dir)
}

/// Holds an exclusive lock on `up.lock` for as long as the file is open.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("up.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // `pgplane down` reads who to stop from the lock file.
            use std::io::Write;
            let mut f = &file;
            f.set_len(0)
                .and_then(|()| writeln!(f, "{}", std::process::id()))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another `pgplane up` is already running on {} (lock {} is held)",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Where `pgplane up` keeps everything unless told: a system location as
/// root, where Postgres's unprivileged OS users can reach it (a checkout
/// under `/root` is not reachable by them), the working directory otherwise.
pub fn default_data_dir() -> PathBuf {
    if RunAs::can_isolate() {
        PathBuf::from("/var/lib/pgplane")
    } else {
        PathBuf::from("./pgplane-data")
    }
}

/// `pgplane up`'s sealing keys: `DATA_DIR/pgplane.key` (mode 0600).
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("pgplane.key")
}

/// The URL of the state database of `pgplane up`'s data directory.
pub fn state_database_url(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("state.json");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (is this a pgplane up data directory?)",
            path.display()
        )
    })?;
    let meta: StateDb =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?;
    Ok(meta.url())
}

impl StateDb {
    fn url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }
}

async fn start_state_db(
    data_dir: &Path,
    bins: &PostgresBinaries,
    run_as: &RunAs,
    template: &Template,
) -> anyhow::Result<(Agent, String)> {
    let meta_path = data_dir.join("state.json");
    let meta: StateDb = match std::fs::read(&meta_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is corrupt", meta_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let meta = StateDb {
                port,
                password: Secret::generate().expose().to_owned(),
            };
            write_private(&meta_path, &serde_json::to_vec_pretty(&meta)?)?;
            meta
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", meta_path.display())),
    };
    let agent = Agent::new(
        bins.clone(),
        run_as.clone(),
        InstanceConfig::new(data_dir.join("state"), meta.port),
    );
    let password = Secret::new(meta.password.clone());
    agent.create(template, &password).await?;
    agent.start().await?;
    Ok((agent, meta.url()))
}

/// Re-uses the token in `pgplane.env` when it is still valid; otherwise
/// creates a new admin token for the default organisation.
async fn admin_token(pool: &reconciler::PgPool, data_dir: &Path) -> anyhow::Result<String> {
    let mut conn = pool.acquire().await?;
    if let Ok(env) = std::fs::read_to_string(data_dir.join("pgplane.env")) {
        if let Some(token) = env.lines().find_map(|l| l.strip_prefix("PGPLANE_TOKEN=")) {
            if reconciler::auth::token_is_valid(&mut conn, token).await? {
                return Ok(token.to_owned());
            }
        }
    }
    Ok(
        reconciler::auth::create_token(
            &mut conn,
            DEFAULT_ORG,
            true,
            Some("pgplane up admin token"),
        )
        .await?,
    )
}

fn write_env_file(data_dir: &Path, endpoint: &str, token: &str) -> anyhow::Result<()> {
    let body = format!("PGPLANE_ENDPOINT={endpoint}\nPGPLANE_TOKEN={token}\n");
    write_private(&data_dir.join("pgplane.env"), body.as_bytes())
}

/// Writes a file only its owner can read (0600), atomically.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_data_directory_is_reachable_by_postgres_users_as_root() {
        let d = default_data_dir();
        if RunAs::can_isolate() {
            assert_eq!(d, PathBuf::from("/var/lib/pgplane"));
        } else {
            assert_eq!(d, PathBuf::from("./pgplane-data"));
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("20000-29999"), Ok(20000..=29999));
        assert_eq!(parse_port_range("5432"), Ok(5432..=5432));
        assert!(parse_port_range("30000-20000")
            .unwrap_err()
            .contains("after"));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("a-b").is_err());
    }
}
