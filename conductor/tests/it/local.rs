//! The local runtime with real Postgres instances.

use conductor::{LocalRuntime, LocalSettings, Runtime};
use domain::{EventKind, Extension, InstanceSpec, ReportKind};
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::support::*;

async fn runtime(root: &std::path::Path) -> LocalRuntime {
    let mut settings = LocalSettings::new(root, "postgres");
    settings.template = Some(shared_template());
    LocalRuntime::open(settings).await.unwrap()
}

async fn query_one(applied: &conductor::Applied, password: &str, sql: &str) -> String {
    let client = try_connect(applied, password).await.expect("connect");
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn lifecycle_of_a_real_instance() {
    let dir = scratch_dir();
    let rt = runtime(dir.path()).await;
    let id = Uuid::new_v4();
    let mut spec = InstanceSpec::default();
    spec.extensions.push(Extension::new("hstore"));

    let created = rt
        .apply(&event(id, 1, EventKind::Create, spec.clone()))
        .await
        .unwrap();
    assert_eq!(created.report, ReportKind::Created);
    let password = created
        .password
        .clone()
        .expect("a new instance has a password");
    assert_eq!(
        query_one(&created, &password, "select 'ok'::text").await,
        "ok"
    );
    assert_eq!(created.observed.as_ref().unwrap().extensions, ["hstore"]);

    // Redelivery of generation 1: no-op, same report, no second directory.
    let again = rt
        .apply(&event(id, 1, EventKind::Create, spec.clone()))
        .await
        .unwrap();
    assert_eq!(again.report, ReportKind::Created);
    assert!(!again.restarted);
    let dirs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("i-")
        })
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(dirs, 2, "one data directory and its socket directory");

    spec.config.insert("work_mem".into(), "16MB".into());
    let updated = rt
        .apply(&event(id, 2, EventKind::Update, spec.clone()))
        .await
        .unwrap();
    assert_eq!(updated.report, ReportKind::Updated);
    assert!(!updated.restarted);
    assert_eq!(
        query_one(&updated, &password, "show work_mem").await,
        "16MB"
    );

    spec.extensions.push(Extension::new("pg_stat_statements"));
    // ALTER SYSTEM below needs a superuser.
    spec.superuser_access = true;
    let restarted = rt
        .apply(&event(id, 3, EventKind::Update, spec.clone()))
        .await
        .unwrap();
    assert_eq!(restarted.report, ReportKind::Restarted);
    assert!(restarted.restarted);
    assert_eq!(
        query_one(&restarted, &password, "select string_agg(extname, ',' order by extname)::text from pg_extension where extname <> 'plpgsql'").await,
        "hstore,pg_stat_statements"
    );

    // Out of band: somebody changes work_mem in psql; a resync sees it.
    let c = restarted.connection.clone().unwrap();
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=postgres password={password} dbname=postgres",
            c.host, c.port
        ),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("alter system set work_mem = '64MB'")
        .await
        .unwrap();
    client
        .batch_execute("select pg_reload_conf()")
        .await
        .unwrap();
    let seen = crate::support::eventually(
        "drift observed",
        std::time::Duration::from_secs(5),
        || async {
            let obs = rt.observe_all().await;
            let o = obs.iter().find(|o| o.instance_id == id)?;
            (o.observed.config.get("work_mem").map(String::as_str) == Some("64MB"))
                .then_some(o.generation)
        },
    )
    .await;
    assert_eq!(seen, 3);

    let stopped = rt
        .apply(&event(
            id,
            4,
            EventKind::Stop,
            InstanceSpec {
                stopped: true,
                ..spec.clone()
            },
        ))
        .await
        .unwrap();
    assert_eq!(stopped.report, ReportKind::Stopped);
    assert!(!stopped.observed.unwrap().running);
    let started = rt
        .apply(&event(id, 5, EventKind::Start, spec.clone()))
        .await
        .unwrap();
    assert_eq!(started.report, ReportKind::Started);

    let deleted = rt
        .apply(&event(id, 6, EventKind::Delete, spec.clone()))
        .await
        .unwrap();
    assert_eq!(deleted.report, ReportKind::Deleted);
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("i-"))
        .collect();
    assert_eq!(left.len(), 1, "only the tombstone is left: {left:?}");
    assert!(left[0].ends_with(".json"), "{left:?}");
    let tombstone = std::fs::read_to_string(dir.path().join(&left[0])).unwrap();
    assert!(!tombstone.contains(&password), "no password kept");
    // Deleting again is a no-op; a late older event does not bring it back.
    for (generation, kind) in [(6, EventKind::Delete), (2, EventKind::Update)] {
        let late = rt
            .apply(&event(id, generation, kind, spec.clone()))
            .await
            .unwrap();
        assert_eq!(late.report, ReportKind::Deleted);
    }
    assert!(!dir.path().join(left[0].trim_end_matches(".json")).exists());
}

#[tokio::test]
async fn a_late_older_delete_does_not_delete_a_newer_generation() {
    let dir = scratch_dir();
    let rt = runtime(dir.path()).await;
    let id = Uuid::new_v4();
    let spec = InstanceSpec::default();
    rt.apply(&event(id, 3, EventKind::Update, spec.clone()))
        .await
        .unwrap();
    let stale = rt
        .apply(&event(id, 2, EventKind::Delete, spec.clone()))
        .await
        .unwrap();
    assert_eq!(
        stale.report,
        ReportKind::Created,
        "re-reported, not applied"
    );
    assert!(stale.observed.unwrap().running);
    rt.apply(&event(id, 4, EventKind::Delete, spec))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_create_interrupted_by_a_crash_resumes_with_the_same_port_and_directory() {
    let dir = scratch_dir();
    let id = Uuid::new_v4();
    let spec = InstanceSpec::default();
    {
        // First process: creates, then "crashes" before recording the generation.
        let rt = runtime(dir.path()).await;
        let applied = rt
            .apply(&event(id, 1, EventKind::Create, spec.clone()))
            .await
            .unwrap();
        let state_file = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        let mut state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
        state["applied_generation"] = 0.into();
        std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
        // A half-copied directory from the interrupted attempt.
        let key = state_file
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        std::fs::create_dir_all(dir.path().join(format!("{key}.tmp/base"))).unwrap();
        assert!(applied.connection.is_some());
    }
    let rt = runtime(dir.path()).await;
    let first_port = {
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert_eq!(files.len(), 1);
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        s["port"].as_u64().unwrap() as u16
    };
    let applied = rt
        .apply(&event(id, 1, EventKind::Create, spec.clone()))
        .await
        .unwrap();
    assert_eq!(applied.report, ReportKind::Created);
    assert_eq!(applied.connection.as_ref().unwrap().port, first_port);
    let password = applied.password.clone().unwrap();
    assert_eq!(
        query_one(&applied, &password, "select 'ok'::text").await,
        "ok"
    );
    let data_dirs = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("i-") && !n.contains('.'))
        .count();
    assert!((20000..=29999).contains(&first_port), "{first_port}");
    assert_eq!(data_dirs, 1, "no second data directory");
    rt.apply(&event(id, 2, EventKind::Delete, spec))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unavailable_extension_fails_listing_what_is_available() {
    let dir = scratch_dir();
    let rt = runtime(dir.path()).await;
    let available = rt.available_extensions().await.unwrap();
    assert!(available.contains(&"hstore".to_owned()));
    assert!(available.contains(&"pg_stat_statements".to_owned()));
    let catalog = rt.extension_catalog().await.unwrap();
    let names: Vec<&str> = catalog.iter().map(|e| e.name.as_str()).collect();
    assert!(
        names.iter().all(|n| available.iter().any(|a| a == n)),
        "the catalog offers only what is on disk: {names:?}"
    );
    let cron = catalog.iter().find(|e| e.name == "pg_cron").unwrap();
    assert_eq!(cron.preload_library.as_deref(), Some("pg_cron"));
    let id = Uuid::new_v4();
    let mut spec = InstanceSpec::default();
    spec.extensions.push(Extension::new("no_such_extension"));
    let err = rt
        .apply(&event(id, 1, EventKind::Create, spec.clone()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no_such_extension") && msg.contains("hstore"),
        "{msg}"
    );
    rt.apply(&event(id, 2, EventKind::Delete, spec))
        .await
        .unwrap();
}
