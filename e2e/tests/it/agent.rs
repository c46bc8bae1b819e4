//! `pgplane agent`: the pod entrypoint, converging Postgres to a spec file.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

#[test]
fn agent_converges_to_its_spec_file_and_follows_changes() {
    let scratch = scratch_dir();
    let spec_file = scratch.path().join("spec.json");
    std::fs::write(
        &spec_file,
        r#"{"extensions":[{"name":"hstore"}],"config":{"work_mem":"16MB"}}"#,
    )
    .unwrap();
    let password_file = scratch.path().join("password");
    std::fs::write(&password_file, "s3cret-pw").unwrap();
    let port = free_port().to_string();
    let data_dir = scratch.path().join("pgdata");
    let mut agent = spawn(
        "pgplane agent",
        &[
            "agent",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--spec-file",
            spec_file.to_str().unwrap(),
            "--port",
            &port,
            "--listen-address",
            "127.0.0.1",
            "--poll",
            "200ms",
        ],
        &[("PGPLANE_PASSWORD_FILE", password_file.to_str().unwrap())],
        &scratch.path().join("agent.log"),
    );
    let uri = format!("postgres://postgres:s3cret-pw@127.0.0.1:{port}/postgres");
    eventually("work_mem 16MB", Duration::from_secs(60), || {
        (!psql_fails(&uri) && psql(&uri, "show work_mem") == "16MB").then_some(())
    });
    assert_eq!(
        psql(
            &uri,
            "select extname from pg_extension where extname = 'hstore'"
        ),
        "hstore"
    );

    std::fs::write(
        &spec_file,
        r#"{"extensions":[{"name":"hstore"}],"config":{"work_mem":"32MB"}}"#,
    )
    .unwrap();
    eventually("work_mem 32MB", Duration::from_secs(30), || {
        (psql(&uri, "show work_mem") == "32MB").then_some(())
    });
    // A broken spec file keeps the last good spec.
    std::fs::write(&spec_file, "{not json").unwrap();
    let log = scratch.path().join("agent.log");
    eventually(
        "the agent read the broken file",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("spec file unusable; keeping the last good spec")
                .then_some(())
        },
    );
    assert_eq!(psql(&uri, "show work_mem"), "32MB");

    // A recreated credentials Secret (the mounted file changes): the new
    // password works without a restart, the old one no longer does.
    std::fs::write(&password_file, "n3w-pw").unwrap();
    let new_uri = format!("postgres://postgres:n3w-pw@127.0.0.1:{port}/postgres");
    eventually("the new password works", Duration::from_secs(30), || {
        (!psql_fails(&new_uri)).then_some(())
    });
    assert!(psql_fails(&uri), "the old password still works");
    assert_eq!(
        psql(&new_uri, "show work_mem"),
        "32MB",
        "no restart lost settings"
    );

    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(psql_fails(&uri), "postgres stopped with the agent");
    let log = std::fs::read_to_string(scratch.path().join("agent.log")).unwrap();
    assert!(!log.contains("s3cret-pw"), "the password is never logged");
    assert!(!log.contains("n3w-pw"), "the password is never logged");
}
