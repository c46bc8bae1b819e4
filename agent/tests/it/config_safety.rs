//! Configuration that would brick a server is never left in force: the
//! agent puts back the configuration that started, and says what Postgres
//! said. These values pass the agent's own checks on purpose (the control
//! plane's validation refuses most of them earlier); the agent is the last
//! line of defence.

use agent::Error;

use crate::support::{spec, TestInstance};

async fn auto_conf(t: &TestInstance) -> String {
    std::fs::read_to_string(t.data_dir().join("postgresql.auto.conf")).unwrap()
}

#[tokio::test]
async fn a_configuration_that_does_not_start_is_rolled_back() {
    let t = TestInstance::created().await;
    t.agent
        .converge(&spec(&[("work_mem", "8MB")], &[]), false)
        .await
        .unwrap();
    let before = auto_conf(&t).await;
    // Accepted by ALTER SYSTEM, refused by the postmaster at start.
    let bad = spec(&[("work_mem", "8MB"), ("wal_level", "minimal")], &[]);
    let err = t.agent.converge(&bad, false).await.unwrap_err();
    let Error::ConfigRestored { cause } = &err else {
        panic!("{err}");
    };
    let text = err.to_string();
    assert!(matches!(**cause, Error::Start { .. }), "{cause:?}");
    assert!(text.contains("FATAL:"), "Postgres's own words: {text}");
    assert!(text.contains("wal_level"), "{text}");
    assert!(!text.contains("log tail"), "{text}");
    assert!(t.agent.is_running().await.unwrap(), "running again");
    assert_eq!(auto_conf(&t).await, before);
    assert_eq!(t.show("wal_level").await, "replica");
    assert_eq!(t.show("work_mem").await, "8MB");
}

#[tokio::test]
async fn one_refused_parameter_applies_none_of_the_update() {
    let t = TestInstance::created().await;
    let before = auto_conf(&t).await;
    // Applied in name order: maintenance_work_mem is written before
    // statement_timeout is refused, work_mem would come after.
    let bad = spec(
        &[
            ("work_mem", "32MB"),
            ("maintenance_work_mem", "128MB"),
            ("statement_timeout", "not-a-duration"),
        ],
        &[],
    );
    let err = t.agent.converge(&bad, false).await.unwrap_err();
    assert!(
        matches!(err, Error::ConfigRestored { .. }),
        "{err}: {err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("statement_timeout"), "{text}");
    assert!(
        text.contains("invalid value for parameter"),
        "Postgres's reason is in the message: {text}"
    );
    assert_eq!(auto_conf(&t).await, before);
    assert_eq!(t.show("work_mem").await, "4MB");
    assert_eq!(t.show("maintenance_work_mem").await, "64MB", "the default");
}

#[tokio::test]
async fn a_missing_preload_library_is_refused_before_anything_changes() {
    let t = TestInstance::created().await;
    let before = auto_conf(&t).await;
    let bad = spec(&[("shared_preload_libraries", "does_not_exist")], &[]);
    let err = t.agent.converge(&bad, false).await.unwrap_err();
    let Error::LibraryMissing { name, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(name, "does_not_exist");
    assert_eq!(auto_conf(&t).await, before);
    assert!(t.agent.is_running().await.unwrap());
}

#[tokio::test]
async fn a_server_that_no_longer_starts_gets_its_last_good_configuration_back() {
    let t = TestInstance::created().await;
    t.agent
        .converge(&spec(&[("work_mem", "8MB")], &[]), false)
        .await
        .unwrap();
    t.agent.stop().await.unwrap();
    // Written behind pgplane's back while the server was down.
    let path = t.data_dir().join("postgresql.auto.conf");
    let mut text = auto_conf(&t).await;
    text.push_str("shared_preload_libraries = 'does_not_exist'\n");
    std::fs::write(&path, text).unwrap();

    let out = t
        .agent
        .converge(&spec(&[("work_mem", "8MB")], &[]), false)
        .await
        .unwrap();
    assert!(out.observed.running);
    assert!(!auto_conf(&t).await.contains("does_not_exist"));
    assert_eq!(t.show("shared_preload_libraries").await, "");
}
