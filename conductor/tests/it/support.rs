use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor::Runtime;
use domain::{DataPlaneEvent, EventKind, InstanceSpec};
use reconciler::auth::Caller;
use reconciler::AppState;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub async fn control_plane(pool: PgPool) -> (AppState, Caller) {
    reconciler::prepare_database(&pool, "local").await.unwrap();
    let state = AppState::new(pool, "local").await;
    state.publish_keys().await.unwrap();
    let caller = Caller::token("acme", Uuid::nil(), true);
    sqlx::query("insert into orgs (name) values ('acme')")
        .execute(&state.pool)
        .await
        .unwrap();
    (state, caller)
}

/// Runs the status consumer and a conductor until the returned token is cancelled.
pub fn spawn_loops<R: Runtime>(state: &AppState, runtime: Arc<R>) -> CancellationToken {
    let cancel = CancellationToken::new();
    tokio::spawn(reconciler::status::run(state.clone(), cancel.clone()));
    let mut settings = conductor::Settings::new("local");
    settings.resync_every = Duration::from_millis(300);
    tokio::spawn(conductor::run(
        state.queues.clone(),
        runtime,
        settings,
        cancel.clone(),
    ));
    cancel
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn instance(state: &AppState, name: &str) -> api::Instance {
    let mut conn = state.pool.acquire().await.unwrap();
    reconciler::store::find_instance(&mut conn, "acme", name, false)
        .await
        .unwrap()
        .into_api()
}

pub fn event(id: Uuid, generation: i64, kind: EventKind, spec: InstanceSpec) -> DataPlaneEvent {
    DataPlaneEvent {
        event_id: Uuid::new_v4(),
        instance_id: id,
        org: "acme".into(),
        name: "orders".into(),
        generation,
        kind,
        spec,
        restart_predicted: false,
        restore_from: None,
        switchover_to: None,
    }
}

/// A directory under /tmp that the Postgres user can traverse.
pub fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgc")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// One template for every local-runtime test on this machine.
pub fn shared_template() -> std::path::PathBuf {
    std::env::temp_dir().join("pgplane-conductor-it-template")
}

/// A client of an applied instance over TCP with `password`, as users connect.
pub async fn try_connect(
    applied: &conductor::Applied,
    password: &str,
) -> Option<tokio_postgres::Client> {
    let c = applied.connection.as_ref()?;
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user={} password={password} dbname={}",
            c.host, c.port, c.user, c.database
        ),
        tokio_postgres::NoTls,
    )
    .await
    .ok()?;
    tokio::spawn(conn);
    Some(client)
}
