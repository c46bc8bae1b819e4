//! `pgplane agent`: the pod entrypoint, converging Postgres to a spec file,
//! again at each new generation, and starting a killed server again.

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
    let status_addr = format!("127.0.0.1:{}", free_port());
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
            "--status-addr",
            &status_addr,
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

    // A new generation of the same spec converges again: what changed
    // behind pgplane's back (by a superuser, as a tenant who opted in can)
    // is put back, in place (a heal).
    std::fs::write(
        &spec_file,
        r#"{"extensions":[{"name":"hstore"}],"config":{"work_mem":"32MB"},"superuserAccess":true}"#,
    )
    .unwrap();
    std::fs::write(scratch.path().join("generation"), "2").unwrap();
    eventually("generation 2 converged", Duration::from_secs(30), || {
        (status(&status_addr)["convergedGeneration"] == 2).then_some(())
    });
    psql(&new_uri, "alter system set work_mem = '48MB'");
    psql(&new_uri, "select pg_reload_conf()");
    eventually("the ALTER SYSTEM applies", Duration::from_secs(30), || {
        (psql(&new_uri, "show work_mem") == "48MB").then_some(())
    });
    let started = psql(&new_uri, "select pg_postmaster_start_time()");
    std::fs::write(scratch.path().join("generation"), "3").unwrap();
    eventually(
        "generation 3 heals work_mem",
        Duration::from_secs(30),
        || (psql(&new_uri, "show work_mem") == "32MB").then_some(()),
    );
    assert_eq!(
        psql(&new_uri, "select pg_postmaster_start_time()"),
        started,
        "healed without a restart"
    );

    // The server is killed: the agent starts it again and says so.
    assert_eq!(status(&status_addr).get("restarts"), None);
    let pid: i32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let restarted = eventually(
        "the killed server runs again",
        Duration::from_secs(60),
        || {
            let status = status(&status_addr);
            (status["restarts"] == 1 && !psql_fails(&new_uri)).then_some(status)
        },
    );
    assert_eq!(restarted["lastExit"], "killed by signal 9 (SIGKILL)");
    assert_ne!(
        psql(&new_uri, "select pg_postmaster_start_time()"),
        started,
        "a new server"
    );
    assert_eq!(psql(&new_uri, "show work_mem"), "32MB");

    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(psql_fails(&uri), "postgres stopped with the agent");
    let log = std::fs::read_to_string(scratch.path().join("agent.log")).unwrap();
    assert!(!log.contains("s3cret-pw"), "the password is never logged");
    assert!(!log.contains("n3w-pw"), "the password is never logged");
}

/// The agent's `GET /status` at `addr` (`null` while it does not answer).
fn status(addr: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return serde_json::Value::Null;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    if stream.write_all(b"GET /status HTTP/1.0\r\n\r\n").is_err()
        || stream.read_to_string(&mut answer).is_err()
    {
        return serde_json::Value::Null;
    }
    answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_default()
}
