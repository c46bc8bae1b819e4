//! Create, connect, stop, start, adopt, delete.

use std::time::Instant;

use agent::{Agent, Error, InstanceConfig, Secret};

use crate::support::{bins, connect, run_as, scratch_dir, template, TestInstance};

#[tokio::test]
async fn created_instance_takes_the_password_over_tcp_and_rejects_others() {
    let template = template().await;
    let t = TestInstance::new();
    let started = Instant::now();
    t.agent.create(&template, &t.password).await.unwrap();
    let client = t.client().await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    eprintln!("create → first query over TCP: {:?}", started.elapsed());
    assert_eq!(one, 1);

    let Err(err) = connect(&t.agent, "not-the-password").await else {
        panic!("a wrong password was accepted");
    };
    let code = err.as_db_error().map(|e| e.code().code().to_owned());
    assert_eq!(code.as_deref(), Some("28P01"), "{err}");
}

#[tokio::test]
async fn create_is_idempotent() {
    let t = TestInstance::created().await;
    let pid = std::fs::read_to_string(t.data_dir().join("postmaster.pid")).unwrap();
    t.agent
        .create(&template().await, &Secret::new("other".into()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(t.data_dir().join("postmaster.pid")).unwrap(),
        pid
    );
    let mut entries: Vec<String> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["data", "data.sock"]);
    // The first password still works.
    t.client().await;
}

#[tokio::test]
async fn half_copied_tmp_dir_is_cleaned_up() {
    let t = TestInstance::new();
    let tmp = t.dir.path().join("data.tmp");
    std::fs::create_dir_all(tmp.join("base")).unwrap();
    std::fs::write(tmp.join("PG_VERSION"), "15\n").unwrap();
    t.agent
        .create(&template().await, &t.password)
        .await
        .unwrap();
    assert!(!tmp.exists());
    t.client().await;
}

#[tokio::test]
async fn a_new_agent_adopts_or_starts_the_same_instance() {
    let t = TestInstance::created().await;
    t.agent.stop().await.unwrap();
    assert!(!t.agent.is_running().await.unwrap());
    t.agent.stop().await.unwrap(); // no-op when stopped

    let again = Agent::new(bins(), run_as(), t.agent.config().clone());
    again.start().await.unwrap();
    assert!(t.agent.is_running().await.unwrap());
    let pid = std::fs::read_to_string(t.data_dir().join("postmaster.pid")).unwrap();
    // Starting a running instance adopts it.
    t.agent.start().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(t.data_dir().join("postmaster.pid")).unwrap(),
        pid
    );
    t.client().await;

    t.agent.restart().await.unwrap();
    assert_ne!(
        std::fs::read_to_string(t.data_dir().join("postmaster.pid")).unwrap(),
        pid
    );
    t.client().await;
}

#[tokio::test]
async fn delete_removes_everything_and_is_idempotent() {
    let t = TestInstance::created().await;
    t.agent.delete().await.unwrap();
    assert!(!t.agent.is_running().await.unwrap());
    assert_eq!(std::fs::read_dir(t.dir.path()).unwrap().count(), 0);
    t.agent.delete().await.unwrap();
}

#[tokio::test]
async fn the_password_never_reaches_the_server_log() {
    let t = TestInstance::created().await;
    t.client().await;
    assert!(connect(&t.agent, "wrong").await.is_err());
    t.agent.restart().await.unwrap();
    let log = std::fs::read_to_string(t.agent.log_file()).unwrap();
    assert!(
        log.contains("database system is ready to accept connections"),
        "{log}"
    );
    assert!(
        !log.contains(t.password.expose()),
        "password in the log:\n{log}"
    );
}

#[tokio::test]
async fn an_untraversable_parent_is_named_in_the_error() {
    if !nix::unistd::getuid().is_root() {
        return; // only root switches to another user
    }
    let dir = scratch_dir();
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let config = InstanceConfig::new(closed.join("data"), 5432);
    let agent = Agent::new(bins(), run_as(), config);
    let err = agent
        .create(&template().await, &Secret::generate())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotTraversable { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&closed.display().to_string()) && msg.contains("chmod o+x"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_too_long_socket_path_suggests_a_shorter_data_dir() {
    let dir = scratch_dir();
    let config = InstanceConfig::new(dir.path().join("d".repeat(90)), 5432);
    let agent = Agent::new(bins(), run_as(), config);
    let err = agent
        .create(&template().await, &Secret::generate())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shorter --data-dir"), "{err}");
}

#[tokio::test]
async fn a_failing_start_reports_the_log_quickly() {
    let first = TestInstance::created().await;
    let dir = scratch_dir();
    let config = InstanceConfig::new(dir.path().join("data"), first.agent.config().port);
    let agent = Agent::new(bins(), run_as(), config);
    let started = Instant::now();
    let err = agent
        .create(&template().await, &Secret::generate())
        .await
        .unwrap_err();
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
    let Error::Start { log_tail, .. } = &err else {
        panic!("{err}");
    };
    assert!(log_tail.contains("could not bind"), "{err}");
}

const CHILD_DIR: &str = "PGPLANE_AGENT_IT_CHILD_DIR";
const CHILD_PORT: &str = "PGPLANE_AGENT_IT_CHILD_PORT";

/// Runs itself as a child process that creates an instance and exits; the
/// server must keep running, and a new agent adopts it.
#[tokio::test]
async fn the_server_outlives_the_process_that_started_it() {
    if let (Ok(dir), Ok(port)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_PORT)) {
        let config = InstanceConfig::new(dir, port.parse().unwrap());
        let agent = Agent::new(bins(), run_as(), config);
        agent
            .create(&template().await, &Secret::new("child-pw".into()))
            .await
            .unwrap();
        return;
    }
    let t = TestInstance::new();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lifecycle::the_server_outlives_the_process_that_started_it",
        ])
        .env(CHILD_DIR, t.data_dir())
        .env(CHILD_PORT, t.agent.config().port.to_string())
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(t.agent.is_running().await.unwrap());
    connect(&t.agent, "child-pw").await.unwrap();
    t.agent.stop().await.unwrap();
    assert!(!t.agent.is_running().await.unwrap());
}

/// A data directory as older versions made it: `postgres` the bootstrap
/// superuser, trusted on the unix socket.
fn legacy_data_dir(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let user = run_as();
    std::os::unix::fs::chown(dir, Some(user.uid()), Some(user.gid())).unwrap();
    let initdb = bins().initdb();
    let mut cmd = if nix::unistd::getuid().is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", user.name(), "--"]).arg(&initdb);
        c
    } else {
        std::process::Command::new(&initdb)
    };
    let out = cmd
        .arg("-D")
        .arg(dir)
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        ])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        dir.join("pg_hba.conf"),
        "# Managed by pgplane.\n\
         local   all   postgres                  trust\n\
         host    all   all       127.0.0.1/32    scram-sha-256\n",
    )
    .unwrap();
    let conf = dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\ninclude_if_exists = 'pgplane.conf'\n");
    std::fs::write(&conf, text).unwrap();
    std::fs::write(
        dir.join(".pgplane-instance-complete"),
        "created by pgplane\n",
    )
    .unwrap();
}

#[tokio::test]
async fn a_data_directory_made_by_an_older_pgplane_is_upgraded_on_start() {
    let t = TestInstance::new();
    legacy_data_dir(&t.data_dir());
    t.agent.start().await.expect("upgraded and started");
    let hba = std::fs::read_to_string(t.data_dir().join("pg_hba.conf")).unwrap();
    assert!(!hba.contains("trust"), "{hba}");
    t.agent.set_password(&t.password).await.unwrap();
    let out = t
        .agent
        .converge(&crate::support::spec(&[], &[]), false)
        .await
        .unwrap();
    assert_eq!(out.observed.superuser_access, Some(false));
    let c = t.client().await;
    let superuser: bool = c
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser);
    // Idempotent: the next agent finds the current layout.
    let again = Agent::new(bins(), run_as(), t.agent.config().clone());
    again.stop().await.unwrap();
    again.start().await.unwrap();
}
