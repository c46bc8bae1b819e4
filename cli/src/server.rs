//! `pgplane server`, `pgplane conductor` and `pgplane token`: the control
//! plane and a data plane as separate processes against an external Postgres.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::up::{parse_duration, shutdown_signal};

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// The control-plane database (PGMQ is installed into it).
    #[arg(long, env = "PGPLANE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Address of the HTTP API.
    #[arg(long, env = "PGPLANE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data plane of new instances that name none.
    #[arg(long, default_value = "local")]
    pub default_data_plane: String,
    /// How long a data plane may owe a report before the desired spec is sent again.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub resend_after: Duration,
    /// Where GitOps sources' repositories are cached.
    #[arg(
        long,
        env = "PGPLANE_GIT_CACHE_DIR",
        default_value = "./pgplane-git-cache"
    )]
    pub git_cache_dir: PathBuf,
    /// Let sources be local paths and file:// URLs. Every organisation's
    /// token could then read any git repository this process can read:
    /// only for a control plane whose tenants may all do that.
    #[arg(long, env = "PGPLANE_ALLOW_LOCAL_SOURCES")]
    pub allow_local_sources: bool,
    /// Let sources be URLs whose host resolves to a loopback, private,
    /// link-local, shared (CGNAT) or other non-public address. Every
    /// organisation's token could then make this process connect into its
    /// network.
    #[arg(long, env = "PGPLANE_ALLOW_PRIVATE_SOURCE_URLS")]
    pub allow_private_source_urls: bool,
    /// Let source fetches authenticate with this process's own git
    /// credentials (its ssh agent, its Kerberos/NTLM identity). Every
    /// organisation's token could then read any repository those reach.
    #[arg(long, env = "PGPLANE_ALLOW_SERVER_GIT_CREDENTIALS")]
    pub allow_server_git_credentials: bool,
    /// How many live (not deleted) instances one organisation may have;
    /// creating one more is refused (403). 0 for no limit.
    #[arg(long, env = "PGPLANE_MAX_INSTANCES_PER_ORG", default_value_t = reconciler::DEFAULT_MAX_INSTANCES_PER_ORG)]
    pub max_instances_per_org: u32,
    #[command(flatten)]
    pub keys: crate::secrets::KeyArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Real Postgres servers on this machine.
    Local,
    /// Reports success without running anything (benchmarks only).
    Simulated,
    /// `PostgresInstance` resources in a Kubernetes namespace (the operator runs them).
    Kubernetes,
}

#[derive(clap::Args, Debug)]
pub struct ConductorArgs {
    /// The control-plane database the queues live in.
    #[arg(long, env = "PGPLANE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Name of this data plane (its queue is dp_<name>).
    #[arg(long, default_value = "local")]
    pub data_plane: String,
    #[arg(long, value_enum, default_value_t = RuntimeKind::Local)]
    pub runtime: RuntimeKind,
    /// Namespace of the `PostgresInstance` resources (runtime kubernetes;
    /// the client comes from in-cluster config or KUBECONFIG). With
    /// --namespace-per-org, the prefix of one namespace per organisation.
    #[arg(long, env = "PGPLANE_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Put each organisation's instances in its own namespace,
    /// `NAMESPACE-ORG`, created on its first instance (runtime kubernetes):
    /// names never clash across organisations, and quotas or network
    /// policies can be set per tenant.
    #[arg(long, env = "PGPLANE_NAMESPACE_PER_ORG")]
    pub namespace_per_org: bool,
    /// Where the local runtime keeps its template and instances.
    #[arg(
        long,
        env = "PGPLANE_DATA_DIR",
        default_value = "./pgplane-data/instances"
    )]
    pub data_dir: PathBuf,
    /// The OS user that runs Postgres when pgplane runs as root (created if
    /// missing). Ignored when not root.
    #[arg(long, env = "PGPLANE_POSTGRES_USER", default_value = "postgres")]
    pub postgres_user: String,
    /// `listen_addresses` of the instances.
    #[arg(long, default_value = "127.0.0.1")]
    pub instance_listen_address: String,
    /// Ports the instances listen on, `FIRST-LAST` (below the kernel's
    /// ephemeral range, 32768-60999 on Linux).
    #[arg(long, value_name = "FIRST-LAST", default_value = "20000-29999", value_parser = crate::up::parse_port_range)]
    pub instance_ports: std::ops::RangeInclusive<u16>,
    /// Without --backup-repo or --backup-s3-endpoint the local runtime's
    /// instances are not backed up.
    #[command(flatten)]
    pub backups: crate::backup_repo::BackupRepoArgs,
    /// Run each server in a cgroup limited to its `resources.memory`
    /// (needs root and the kernel's memory controller).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub enforce_memory: bool,
    /// How long a message being worked on stays hidden (redelivery delay after a crash).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub visibility_timeout: Duration,
    /// How often every instance is re-observed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// How long the primary of an instance with standbys may not answer
    /// before its most advanced standby replaces it. A primary whose server
    /// is gone is replaced at once.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub failover_timeout: Duration,
    /// Fault injection for crash tests: pause after creating a data directory.
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub debug_create_pause: Option<Duration>,
}

pub async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let listener = crate::up::bind_listen(args.listen)?;
    let keyring = args.keys.keyring()?;
    let pool = reconciler::connect(&args.database_url).await?;
    reconciler::prepare_database(&pool, &args.default_data_plane).await?;
    let cancel = CancellationToken::new();
    let settings = reconciler::Settings {
        default_data_plane: args.default_data_plane,
        resend_every: Duration::from_secs(5),
        resend_after: args.resend_after,
        git_cache_dir: args.git_cache_dir,
        source_policy: reconciler::SourcePolicy {
            allow_local: args.allow_local_sources,
            allow_private: args.allow_private_source_urls,
            allow_server_credentials: args.allow_server_git_credentials,
        },
        max_instances_per_org: args.max_instances_per_org,
        keyring,
    };
    let server = tokio::spawn(reconciler::run(
        pool,
        listener,
        settings,
        cancel.clone(),
        None,
    ));
    tokio::select! {
        _ = shutdown_signal() => cancel.cancel(),
        _ = cancel.cancelled() => {}
    }
    server.await.context("control plane task")??;
    Ok(())
}

pub async fn run_conductor(args: ConductorArgs) -> anyhow::Result<()> {
    let pool = reconciler::connect(&args.database_url).await?;
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopper.cancel();
    });
    // A conductor may start before the control plane, and never changes
    // the control plane's schema itself.
    if !reconciler::wait_until_prepared(&pool, &cancel)
        .await
        .context("checking the control plane's database")?
    {
        return Ok(());
    }
    let queues = queue::Queues::new(pool).await;
    let mut settings = conductor::Settings::new(&args.data_plane);
    settings.visibility_timeout = args.visibility_timeout;
    settings.resync_every = args.resync_interval;
    match args.runtime {
        RuntimeKind::Local => {
            let runtime = Arc::new(
                conductor::LocalRuntime::open(conductor::LocalSettings {
                    root: args.data_dir,
                    postgres_user: args.postgres_user,
                    listen_address: args.instance_listen_address,
                    template: None,
                    create_pause: args.debug_create_pause,
                    restart_backoff: conductor::local::DEFAULT_RESTART_BACKOFF,
                    enforce_memory: args.enforce_memory,
                    ports: args.instance_ports,
                    backup_repository: args.backups.repository(None)?,
                    failover_timeout: args.failover_timeout,
                })
                .await?,
            );
            let adopted = runtime.adopt_all().await;
            tracing::info!(adopted, "local runtime ready");
            conductor::run(queues, runtime, settings, cancel).await?;
        }
        RuntimeKind::Simulated => {
            let runtime = Arc::new(conductor::SimulatedRuntime::new());
            conductor::run(queues, runtime, settings, cancel).await?;
        }
        RuntimeKind::Kubernetes => {
            let runtime = Arc::new(
                kuberuntime::KubernetesRuntime::connect(if args.namespace_per_org {
                    kuberuntime::Placement::PerOrg {
                        prefix: args.namespace.clone(),
                    }
                } else {
                    kuberuntime::Placement::Namespace(args.namespace.clone())
                })
                .await
                .context("building a Kubernetes client (in-cluster or KUBECONFIG)")?,
            );
            conductor::run(queues, runtime, settings, cancel).await?;
        }
    }
    Ok(())
}
