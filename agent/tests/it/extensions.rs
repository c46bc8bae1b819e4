//! The extension catalog of this machine, versions and updates, drops that
//! something depends on, and preloaded extensions (pg_cron).

use std::collections::BTreeMap;

use agent::Error;
use domain::{Ensure, Extension, InstanceSpec};

use crate::support::{bins, spec, TestInstance};

fn at(name: &str, version: &str) -> Extension {
    Extension {
        version: Some(version.to_owned()),
        ..Extension::new(name)
    }
}

fn with(extensions: Vec<Extension>) -> InstanceSpec {
    InstanceSpec {
        extensions,
        ..Default::default()
    }
}

async fn auto_conf(t: &TestInstance) -> String {
    std::fs::read_to_string(t.data_dir().join("postgresql.auto.conf")).unwrap_or_default()
}

#[tokio::test]
async fn the_catalog_is_what_the_server_can_install() {
    let catalog = agent::read_catalog(&bins()).unwrap();
    let get = |name: &str| {
        catalog
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} not in the catalog"))
    };
    let cron = get("pg_cron");
    assert_eq!(cron.preload_library.as_deref(), Some("pg_cron"));
    assert_eq!(cron.package.as_deref(), Some("postgresql-15-cron"));
    assert_eq!(cron.default_version, "1.4-1");
    assert!(get("pgaudit").restart_required);
    let hstore = get("hstore");
    assert!(hstore.trusted);
    assert!(!hstore.restart_required);
    assert!(hstore.versions.iter().any(|v| v == "1.7"), "{hstore:?}");
    assert_eq!(get("postgis_topology").requires, ["postgis"]);
    assert_eq!(
        get("postgis").package.as_deref(),
        Some("postgresql-15-postgis-3-scripts")
    );
    // A reviewed preload extension whose library is not on disk is not offered.
    assert!(!agent::library_present(&bins().pkglibdir(), "timescaledb"));
    assert!(catalog.iter().all(|e| e.name != "timescaledb"));

    // The versions are exactly the server's own list.
    let t = TestInstance::created().await;
    t.agent.converge(&spec(&[], &[]), false).await.unwrap();
    let rows = t
        .client()
        .await
        .query(
            "SELECT name::text, version FROM pg_available_extension_versions",
            &[],
        )
        .await
        .unwrap();
    let mut server: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rows {
        server.entry(r.get(0)).or_default().push(r.get(1));
    }
    for e in &catalog {
        let mut want = server.get(&e.name).cloned().unwrap_or_default();
        want.sort_by(|a, b| domain::extension::compare_versions(a, b));
        assert_eq!(e.versions, want, "versions of {}", e.name);
    }
}

#[tokio::test]
async fn a_declared_version_is_created_and_a_changed_one_updated() {
    let t = TestInstance::created().await;
    let out = t
        .agent
        .converge(
            &with(vec![at("hstore", "1.7"), at("postgis", "3.3.2")]),
            false,
        )
        .await
        .unwrap();
    assert_eq!(out.observed.extension_versions["hstore"], "1.7");
    assert_eq!(out.observed.extension_versions["postgis"], "3.3.2");
    let version = || async {
        let row = t
            .client()
            .await
            .query_one(
                "SELECT extversion FROM pg_extension WHERE extname = 'hstore'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(version().await, "1.7");

    let out = t
        .agent
        .converge(
            &with(vec![at("hstore", "1.8"), at("postgis", "3.3.2")]),
            false,
        )
        .await
        .unwrap();
    assert!(!out.restarted, "{out:?}");
    assert_eq!(version().await, "1.8", "ALTER EXTENSION … UPDATE TO ran");
    assert_eq!(out.observed.extension_versions["hstore"], "1.8");
    let declared = with(vec![at("hstore", "1.8")]);
    assert_eq!(domain::drift(&declared, &out.observed), vec![]);

    // Without a version, what is installed is left as it is.
    let out = t
        .agent
        .converge(&spec(&[], &["hstore"]), false)
        .await
        .unwrap();
    assert_eq!(out.observed.extension_versions["hstore"], "1.8");

    // A version the server does not have is refused before anything runs.
    let err = t
        .agent
        .converge(&with(vec![at("hstore", "9.9")]), false)
        .await
        .unwrap_err();
    let Error::ExtensionVersionUnavailable { available, .. } = &err else {
        panic!("{err}");
    };
    assert!(available.iter().any(|v| v == "1.8"), "{available:?}");
    assert!(
        err.to_string()
            .starts_with("version \"9.9\" of extension \"hstore\" is not available on this data plane; available: "),
        "{err}"
    );
    assert_eq!(version().await, "1.8");
}

#[tokio::test]
async fn a_drop_something_depends_on_is_refused_naming_it() {
    let t = TestInstance::created().await;
    t.agent
        .converge(&spec(&[], &["hstore"]), false)
        .await
        .unwrap();
    t.client()
        .await
        .batch_execute("CREATE TABLE tags (id int, labels hstore)")
        .await
        .unwrap();
    let drop = with(vec![Extension {
        ensure: Ensure::Absent,
        ..Extension::new("hstore")
    }]);
    let err = t.agent.converge(&drop, false).await.unwrap_err();
    let Error::ExtensionInUse { name, dependents } = &err else {
        panic!("{err}");
    };
    assert_eq!(name, "hstore");
    assert!(dependents.contains("column labels of table tags"), "{err}");
    assert!(t.agent.is_running().await.unwrap());

    t.client()
        .await
        .batch_execute("DROP TABLE tags")
        .await
        .unwrap();
    let out = t.agent.converge(&drop, false).await.unwrap();
    assert!(
        out.observed.extensions.iter().all(|e| e != "hstore"),
        "{out:?}"
    );
    assert_eq!(domain::drift(&drop, &out.observed), vec![]);
}

#[tokio::test]
async fn pg_cron_is_preloaded_with_a_predicted_restart_and_schedules_jobs() {
    let t = TestInstance::created().await;
    let before = spec(&[], &[]);
    t.agent.converge(&before, false).await.unwrap();
    let after = spec(&[], &["pg_cron"]);
    let predicted = domain::predict_restart(&before, &after);
    assert!(predicted.required(), "{predicted:?}");
    assert!(
        predicted.reasons[0].starts_with("shared_preload_libraries changed"),
        "{predicted:?}"
    );

    let out = t.agent.converge(&after, false).await.unwrap();
    assert!(out.restarted, "{out:?}");
    assert_eq!(out.pending_restart_before, ["shared_preload_libraries"]);
    assert_eq!(t.show("shared_preload_libraries").await, "pg_cron");
    assert_eq!(t.show("cron.database_name").await, "postgres");
    assert_eq!(domain::drift(&after, &out.observed), vec![]);

    let client = t.client().await;
    let job: i64 = client
        .query_one(
            "SELECT cron.schedule('nightly-vacuum', '30 3 * * *', 'VACUUM')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (schedule, user): (String, String) = client
        .query_one(
            "SELECT schedule, username FROM cron.job WHERE jobid = $1",
            &[&job],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(schedule, "30 3 * * *");
    assert_eq!(
        user, "postgres",
        "jobs run as the client role, not a superuser"
    );
}

#[tokio::test]
async fn an_extension_whose_preload_library_is_missing_is_refused_before_any_restart() {
    let t = TestInstance::created().await;
    t.agent
        .converge(&spec(&[("work_mem", "8MB")], &[]), false)
        .await
        .unwrap();
    let conf = auto_conf(&t).await;
    let started = || async {
        t.client()
            .await
            .query_one("SELECT pg_postmaster_start_time()::text", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let started_before = started().await;
    // timescaledb is in the reviewed table; its library is not on disk.
    let err = t
        .agent
        .converge(&spec(&[("work_mem", "8MB")], &["timescaledb"]), false)
        .await
        .unwrap_err();
    let Error::LibraryMissing { name, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(name, "timescaledb");
    assert!(
        err.to_string()
            .starts_with("preload library \"timescaledb\" is not installed on this data plane"),
        "{err}"
    );
    assert!(t.agent.is_running().await.unwrap());
    assert_eq!(
        started().await,
        started_before,
        "the server was not restarted"
    );
    assert_eq!(auto_conf(&t).await, conf);
    assert_eq!(t.show("shared_preload_libraries").await, "");
}
