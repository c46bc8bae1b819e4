//! Converging configuration and extensions, and observing the result.

use std::time::Duration;

use agent::Error;

use crate::support::{eventually, spec, TestInstance};

#[tokio::test]
async fn reloadable_parameters_apply_without_restart() {
    let t = TestInstance::created().await;
    for value in ["16MB", "17MB", "18MB"] {
        let out = t
            .agent
            .converge(&spec(&[("work_mem", value)], &[]), false)
            .await
            .unwrap();
        assert!(!out.restarted, "{out:?}");
        assert!(out.pending_restart_before.is_empty(), "{out:?}");
        // Visible to a new connection right away, no polling needed.
        assert_eq!(t.show("work_mem").await, value);
        assert_eq!(out.observed.config["work_mem"], value);
        assert!(out.observed.running);
        assert_eq!(out.observed.postgres_version, "15");
    }
}

#[tokio::test]
async fn preload_extensions_restart_and_get_installed() {
    let t = TestInstance::created().await;
    let out = t
        .agent
        .converge(&spec(&[], &["pg_stat_statements", "hstore"]), false)
        .await
        .unwrap();
    assert!(out.restarted, "{out:?}");
    assert_eq!(out.pending_restart_before, ["shared_preload_libraries"]);
    assert_eq!(out.observed.extensions, ["hstore", "pg_stat_statements"]);
    assert!(out.observed.pending_restart.is_empty(), "{out:?}");
    assert!(t
        .show("shared_preload_libraries")
        .await
        .contains("pg_stat_statements"));
    // The view only works when the library is preloaded.
    t.client()
        .await
        .query("SELECT * FROM pg_stat_statements LIMIT 1", &[])
        .await
        .unwrap();

    // Converging again changes nothing.
    let again = t
        .agent
        .converge(&spec(&[], &["pg_stat_statements", "hstore"]), false)
        .await
        .unwrap();
    assert!(!again.restarted, "{again:?}");

    // Taking hstore out of the spec leaves it installed; declaring it
    // absent drops it.
    let out = t
        .agent
        .converge(&spec(&[], &["pg_stat_statements"]), false)
        .await
        .unwrap();
    assert_eq!(out.observed.extensions, ["hstore", "pg_stat_statements"]);
    let mut absent = spec(&[], &["pg_stat_statements"]);
    absent.extensions.push(domain::Extension {
        ensure: domain::Ensure::Absent,
        ..domain::Extension::new("hstore")
    });
    let out = t.agent.converge(&absent, false).await.unwrap();
    assert_eq!(out.observed.extensions, ["pg_stat_statements"]);
}

#[tokio::test]
async fn postmaster_parameters_restart_and_removed_parameters_reset() {
    let t = TestInstance::created().await;
    let desired = spec(&[("max_connections", "150"), ("work_mem", "8MB")], &[]);
    let out = t.agent.converge(&desired, false).await.unwrap();
    assert!(out.restarted);
    assert_eq!(out.pending_restart_before, ["max_connections"]);
    assert_eq!(t.show("max_connections").await, "150");
    assert_eq!(out.observed.config["max_connections"], "150");

    let out = t.agent.converge(&spec(&[], &[]), false).await.unwrap();
    assert!(
        out.restarted,
        "resetting max_connections needs a restart: {out:?}"
    );
    assert_eq!(out.pending_restart_before, ["max_connections"]);
    assert_eq!(t.show("max_connections").await, "100");
    assert_eq!(t.show("work_mem").await, "4MB");
    assert!(out.observed.config.is_empty());

    let out = t.agent.converge(&spec(&[], &[]), true).await.unwrap();
    assert!(
        out.restarted && out.pending_restart_before.is_empty(),
        "{out:?}"
    );
}

#[tokio::test]
async fn pending_restart_is_seen_even_when_set_out_of_band() {
    let t = TestInstance::created().await;
    let mut superuser = spec(&[], &[]);
    superuser.superuser_access = true;
    t.agent.converge(&superuser, false).await.unwrap();
    let client = t.client().await;
    // Not even reloaded: pending_restart must not depend on signal timing.
    client
        .batch_execute("ALTER SYSTEM SET max_connections = 120")
        .await
        .unwrap();
    let mut desired = spec(&[("max_connections", "120")], &[]);
    desired.superuser_access = true;
    let observed = t.agent.observe(&desired).await.unwrap();
    assert_eq!(observed.pending_restart, ["max_connections"]);
    assert_eq!(observed.config["max_connections"], "100");
    let out = t.agent.converge(&desired, false).await.unwrap();
    assert!(out.restarted, "{out:?}");
    assert_eq!(out.observed.config["max_connections"], "120");
}

#[tokio::test]
async fn unavailable_extensions_are_refused_with_the_available_ones() {
    let t = TestInstance::created().await;
    let err = t
        .agent
        .converge(&spec(&[], &["no_such_ext"]), false)
        .await
        .unwrap_err();
    let Error::ExtensionUnavailable { name, available } = &err else {
        panic!("{err}");
    };
    assert_eq!(name, "no_such_ext");
    assert!(available.iter().any(|a| a == "hstore"), "{available:?}");
    assert!(err.to_string().contains("hstore"), "{err}");
}

#[tokio::test]
async fn stopped_spec_stops_and_unstopped_starts() {
    let t = TestInstance::created().await;
    let mut s = spec(&[("work_mem", "16MB")], &[]);
    s.stopped = true;
    let out = t.agent.converge(&s, false).await.unwrap();
    assert!(!out.observed.running);
    assert_eq!(out.observed.postgres_version, "15");
    assert!(!t.agent.is_running().await.unwrap());

    s.stopped = false;
    let out = t.agent.converge(&s, false).await.unwrap();
    assert!(out.observed.running);
    assert_eq!(t.show("work_mem").await, "16MB");
}

#[tokio::test]
async fn observe_reports_out_of_band_changes() {
    let t = TestInstance::created().await;
    let mut desired = spec(&[("work_mem", "16MB")], &[]);
    desired.superuser_access = true;
    t.agent.converge(&desired, false).await.unwrap();
    assert_eq!(
        t.agent.observe(&desired).await.unwrap().config["work_mem"],
        "16MB"
    );
    let client = t.client().await;
    client
        .batch_execute("ALTER SYSTEM SET work_mem = '64MB'")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    let observed = eventually("work_mem = 64MB", Duration::from_secs(10), || async {
        let o = t.agent.observe(&desired).await.unwrap();
        (o.config["work_mem"] == "64MB").then_some(o)
    })
    .await;
    assert!(observed.running && observed.pending_restart.is_empty());
    // Converging puts it back.
    t.agent.converge(&desired, false).await.unwrap();
    assert_eq!(t.show("work_mem").await, "16MB");
}

#[tokio::test]
async fn invalid_parameters_are_refused() {
    let t = TestInstance::created().await;
    let err = t
        .agent
        .converge(&spec(&[("work_mem; drop", "1")], &[]), false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParameterName { .. }), "{err}");
    let err = t
        .agent
        .converge(&spec(&[("port", "1")], &[]), false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReservedParameter { .. }), "{err}");
    let err = t
        .agent
        .converge(&spec(&[("work_mem", "lots")], &[]), false)
        .await
        .unwrap_err();
    let Error::ConfigRestored { cause } = &err else {
        panic!("{err}");
    };
    assert!(matches!(**cause, Error::ConfigRejected { .. }), "{err}");
    // Quotes in values are escaped, not executed.
    let out = t
        .agent
        .converge(&spec(&[("log_line_prefix", "%m it's ")], &[]), false)
        .await
        .unwrap();
    assert_eq!(out.observed.config["log_line_prefix"], "%m it's ");
    assert_eq!(t.show("log_line_prefix").await, "%m it's ");
}
