//! pgplane's control plane.
//!
//! - [`http`]: the axum API under `/api/v1` (bearer tokens per organisation).
//! - [`console`]: the web console at `/` (sessions opened with a token) and
//!   the event stream `GET /api/v1/events`.
//! - [`commands`]: user commands through the state machine, each in one
//!   transaction together with its PGMQ event.
//! - [`status`]: data-plane reports through the state machine.
//! - [`resend`]: the desired≠actual loop.
//! - [`store`]: the instances' rows and history; [`sources`], [`auth`],
//!   [`console`] and [`drift`] keep their own queries (this crate and
//!   `queue` are the only ones that talk SQL).

pub mod auth;
pub mod commands;
pub mod console;
pub mod drift;
pub mod error;
pub mod grants;
pub mod http;
pub mod resend;
pub mod sources;
pub mod status;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use queue::Queues;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::ApiError;
pub use gitops::SourcePolicy;
pub use sqlx::PgPool;

/// Shared by every handler and loop.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub queues: Queues,
    /// The data plane new instances go to unless they name one.
    pub default_data_plane: String,
    pub gitops: std::sync::Arc<sources::GitOps>,
    /// How many live (not deleted) instances an organisation may have;
    /// 0 for no limit.
    pub max_instances_per_org: u32,
    /// Opens the secrets stored sealed (instance passwords, webhook secrets).
    pub keyring: std::sync::Arc<queue::sealed::Keyring>,
    /// Instance changes for `GET /api/v1/events` and the console.
    pub events: console::events::Events,
    /// Sign-in attempts allowed per client and in all.
    pub sign_in_limiter: std::sync::Arc<console::limit::SignInLimiter>,
}

/// [`Settings::max_instances_per_org`] unless configured.
pub const DEFAULT_MAX_INSTANCES_PER_ORG: u32 = 100;

impl AppState {
    /// State with git repositories cached under the system's temp directory
    /// and the default [`SourcePolicy`] (no local paths, public hosts only).
    pub async fn new(pool: PgPool, default_data_plane: &str) -> AppState {
        AppState::with_source_policy(pool, default_data_plane, SourcePolicy::default()).await
    }

    /// State with git repositories cached under the system's temp directory.
    pub async fn with_source_policy(
        pool: PgPool,
        default_data_plane: &str,
        policy: SourcePolicy,
    ) -> AppState {
        let cache = std::env::temp_dir().join(format!(
            "pgplane-git-cache-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        AppState::with_sources(pool, default_data_plane, cache, policy).await
    }

    /// State with a new sealing key of its own (tests and tools that own
    /// their database: [`AppState::publish_keys`] before data planes store
    /// secrets).
    pub async fn with_sources(
        pool: PgPool,
        default_data_plane: &str,
        git_cache_dir: std::path::PathBuf,
        policy: SourcePolicy,
    ) -> AppState {
        AppState::with_keyring(
            pool,
            default_data_plane,
            git_cache_dir,
            policy,
            queue::sealed::Keyring::generate(),
        )
        .await
    }

    /// State whose secrets are sealed with `keyring`. Touches no database.
    pub async fn with_keyring(
        pool: PgPool,
        default_data_plane: &str,
        git_cache_dir: std::path::PathBuf,
        policy: SourcePolicy,
        keyring: queue::sealed::Keyring,
    ) -> AppState {
        AppState {
            keyring: std::sync::Arc::new(keyring),
            events: console::events::Events::new(pool.clone()),
            sign_in_limiter: Default::default(),
            queues: Queues::new(pool.clone()).await,
            pool,
            default_data_plane: default_data_plane.to_owned(),
            gitops: std::sync::Arc::new(sources::GitOps::new(git_cache_dir, policy)),
            max_instances_per_org: DEFAULT_MAX_INSTANCES_PER_ORG,
        }
    }

    /// Publishes the keyring's current key, so data planes seal to it, and
    /// seals the values still stored in plain text. The database must be
    /// prepared ([`prepare_database`]).
    pub async fn publish_keys(&self) -> Result<(), StartError> {
        let sealed = queue::sealed::seal_plaintext(&self.pool, &self.keyring)
            .await
            .map_err(StartError::Queue)?;
        if sealed.total() > 0 {
            tracing::info!(count = sealed.total(), %sealed, "sealed secrets stored in plain text");
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub default_data_plane: String,
    /// How often the desired≠actual loop looks for overdue instances.
    pub resend_every: Duration,
    /// How long a data plane may owe a report before the event is re-sent.
    pub resend_after: Duration,
    /// Where GitOps sources' repositories are cached (bare clones, readable
    /// by the control plane's OS user only).
    pub git_cache_dir: std::path::PathBuf,
    /// What sources may point at: local paths and `file://`, hosts with
    /// non-public addresses. Tenants are organisations; allow these only
    /// where every token holder may read the machine's repositories and
    /// reach its network.
    pub source_policy: SourcePolicy,
    /// How many live instances an organisation may have (0: no limit).
    pub max_instances_per_org: u32,
    /// The private keys of secrets at rest, kept outside the database.
    pub keyring: queue::sealed::Keyring,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to the control-plane database")]
    Connect(#[source] sqlx::Error),
    #[error("migrating the control-plane database failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("installing PGMQ failed")]
    Queue(#[source] queue::Error),
    #[error("cannot make the git cache directory {path} private")]
    GitCache {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve on the bound listener")]
    Listener(#[source] std::io::Error),
    #[error("{0}")]
    Grant(String),
    #[error("granting a data plane's privileges failed")]
    Granting(#[source] sqlx::Error),
}

/// A pool that fails fast when the database is gone, so requests answer 503
/// instead of hanging.
pub async fn connect(database_url: &str) -> Result<PgPool, StartError> {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
        .map_err(StartError::Connect)
}

/// Why the control plane's database is not ready for a data plane yet (a
/// migration this build knows is not applied, or PGMQ is not installed),
/// or `None` when it is. A data plane waits for this rather than changing
/// the control plane's schema itself.
pub async fn database_unprepared(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    let applied: Vec<i64> = match sqlx::query_scalar(
        "select version from _sqlx_migrations where success order by version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(v) => v,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
            return Ok(Some("no migration is applied yet".to_owned()));
        }
        Err(e) => return Err(e),
    };
    let missing = sqlx::migrate!("./migrations")
        .iter()
        .find(|m| !applied.contains(&m.version))
        .map(|m| {
            format!(
                "migration {} ({}) is not applied yet",
                m.version, m.description
            )
        });
    if missing.is_some() {
        return Ok(missing);
    }
    let pgmq: bool =
        sqlx::query_scalar("select exists(select 1 from pg_namespace where nspname = 'pgmq')")
            .fetch_one(pool)
            .await?;
    Ok((!pgmq).then(|| "PGMQ is not installed yet".to_owned()))
}

/// Waits until the control plane has prepared its database
/// ([`database_unprepared`] says nothing is missing), saying what it waits
/// for. `false` when cancelled while waiting.
pub async fn wait_until_prepared(
    pool: &PgPool,
    cancel: &CancellationToken,
) -> Result<bool, sqlx::Error> {
    let mut said: Option<(String, std::time::Instant)> = None;
    loop {
        let Some(why) = database_unprepared(pool).await? else {
            return Ok(true);
        };
        let repeat = said
            .as_ref()
            .is_some_and(|(w, at)| *w == why && at.elapsed() < Duration::from_secs(10));
        if !repeat {
            tracing::info!(reason = %why, "waiting for the control plane (`pgplane server`) to prepare its database");
            said = Some((why, std::time::Instant::now()));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Applies migrations, installs PGMQ and creates the default data plane's
/// queue. Idempotent; safe from several processes at once.
pub async fn prepare_database(pool: &PgPool, data_plane: &str) -> Result<(), StartError> {
    sqlx::migrate!("./migrations")
        .run(pool)
        .await
        .map_err(StartError::Migrate)?;
    let queues = Queues::new(pool.clone()).await;
    queues.install().await.map_err(StartError::Queue)?;
    queues
        .create_data_plane_queue(data_plane)
        .await
        .map_err(StartError::Queue)?;
    Ok(())
}

/// The axum application (used in-process by tests).
pub fn app(state: AppState) -> axum::Router {
    http::router(state).layer(axum::middleware::from_fn(log_request))
}

async fn log_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}

/// Binds the HTTP API's address, before anything else starts, so a busy
/// address fails at once; [`run`] serves on the listener.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    // Tokio's listener needs a non-blocking socket.
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
}

/// Runs the control plane until `cancel`: the HTTP API (on `listener`, from
/// [`bind`]), the status consumer, the GitOps sync loop and the
/// desired≠actual loop, all tracked and awaited on shutdown. The database
/// must have been prepared ([`prepare_database`]).
pub async fn run(
    pool: PgPool,
    listener: std::net::TcpListener,
    settings: Settings,
    cancel: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), StartError> {
    // A cache directory left by an older version may be readable by others.
    gitops::create_private_dir(&settings.git_cache_dir).map_err(|source| StartError::GitCache {
        path: settings.git_cache_dir.clone(),
        source,
    })?;
    let state = AppState {
        max_instances_per_org: settings.max_instances_per_org,
        ..AppState::with_keyring(
            pool,
            &settings.default_data_plane,
            settings.git_cache_dir.clone(),
            settings.source_policy,
            settings.keyring.clone(),
        )
        .await
    };
    state.publish_keys().await?;
    let addr = listener.local_addr().map_err(StartError::Listener)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(StartError::Listener)?;
    let tasks = TaskTracker::new();
    tasks.spawn(status::run(state.clone(), cancel.clone()));
    tasks.spawn(sources::run(state.clone(), cancel.clone()));
    tasks.spawn(resend::run(
        state.clone(),
        settings.resend_every,
        settings.resend_after,
        cancel.clone(),
    ));
    tasks.close();
    tracing::info!(%addr, "control plane listening");
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let shutdown = cancel.clone();
    let events = state.events.clone();
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            // Event streams never end by themselves.
            events.close();
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
        cancel.cancel();
    }
    tasks.wait().await;
    Ok(())
}
