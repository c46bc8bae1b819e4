//! The first five steps a user takes (`pgplane up`, create with --wait,
//! connect, a reload-only change and the rest, delete), exactly as a user
//! runs them, plus bad input.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

const UP: Duration = Duration::from_secs(60);

pub(crate) fn up(data_dir: &std::path::Path, port: u16, log: &std::path::Path) -> Proc {
    up_with(data_dir, port, log, &[], &[])
}

/// [`up`] with more flags and environment.
pub(crate) fn up_with(
    data_dir: &std::path::Path,
    port: u16,
    log: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let dir = data_dir.to_str().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "up",
        "--data-dir",
        dir,
        "--listen",
        &listen,
        "--resync-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    let mut p = spawn("pgplane up", &args, env, log);
    let printed = read_until(&mut p, "Press Ctrl-C", UP);
    assert!(
        printed.contains(&format!("endpoint:  http://{listen}")),
        "{printed}"
    );
    assert!(printed.contains("token:     in "), "{printed}");
    assert!(
        !printed.contains("pgp_"),
        "the token is never printed: {printed}"
    );
    p
}

#[test]
fn embedded_walkthrough() {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("demo");
    let log = scratch.path().join("up.log");
    let port = free_port();

    // 1. `pgplane up` starts everything and writes pgplane.env (0600).
    let mut server = up(&data_dir, port, &log);
    let env_path = data_dir.join("pgplane.env");
    let mode = std::fs::metadata(&env_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let env_vars = read_env_file(&env_path);
    assert_eq!(
        env_vars[0],
        (
            "PGPLANE_ENDPOINT".into(),
            format!("http://127.0.0.1:{port}")
        )
    );
    assert!(env_vars[1].1.starts_with("pgp_"));
    let env: Vec<(&str, &str)> = env_vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    // 2. create with --wait shows the transitions and returns when Up.
    let o = run(
        &[
            "instance",
            "create",
            "orders",
            "--extension",
            "hstore",
            "--config",
            "work_mem=16MB",
            // ALTER SYSTEM behind pgplane's back, below, needs a superuser.
            "--superuser-access",
            "--wait",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("orders: Submitted → Up (generation 1)"),
        "{}",
        stderr(&o)
    );

    // 3. a real PostgreSQL server.
    let uri = ok(&["instance", "credentials", "orders"], &env)
        .trim()
        .to_owned();
    assert!(uri.starts_with("postgres://postgres:"), "{uri}");
    assert_eq!(psql(&uri, "select 1"), "1");
    assert_eq!(psql(&uri, "show work_mem"), "16MB");
    assert_eq!(
        psql(
            &uri,
            "select extname from pg_extension where extname = 'hstore'"
        ),
        "hstore"
    );

    // 4. reload-only change: Up → Configuring → Up, no restart.
    let started_at = psql(&uri, "select pg_postmaster_start_time()");
    let o = run(
        &[
            "instance",
            "update",
            "orders",
            "--config",
            "work_mem=32MB",
            "--wait",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("applied without restart"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("Configuring → Up"), "{}", stderr(&o));
    assert_eq!(psql(&uri, "show work_mem"), "32MB");
    assert_eq!(
        psql(&uri, "select pg_postmaster_start_time()"),
        started_at,
        "not restarted"
    );

    // pg_stat_statements needs shared_preload_libraries: Up → Restarting → Up.
    let o = run(
        &[
            "instance",
            "update",
            "orders",
            "--extension",
            "pg_stat_statements",
            "--wait",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("restart required: shared_preload_libraries"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("Restarting → Up"), "{}", stderr(&o));
    assert_eq!(
        psql(
            &uri,
            "select extname from pg_extension where extname = 'pg_stat_statements'"
        ),
        "pg_stat_statements"
    );
    assert_ne!(
        psql(&uri, "select pg_postmaster_start_time()"),
        started_at,
        "restarted"
    );

    // max_connections also restarts.
    let o = run(
        &[
            "instance",
            "update",
            "orders",
            "--config",
            "max_connections=150",
            "--wait",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("restart required: max_connections"),
        "{}",
        stderr(&o)
    );
    assert_eq!(psql(&uri, "show max_connections"), "150");

    // -o json everywhere; the history is the state timeline.
    let inst: serde_json::Value =
        serde_json::from_str(&ok(&["instance", "get", "orders", "-o", "json"], &env)).unwrap();
    assert_eq!(inst["state"], "Up");
    assert_eq!(inst["generation"], 4);
    assert_eq!(inst["observedGeneration"], 4);
    let history: serde_json::Value =
        serde_json::from_str(&ok(&["instance", "history", "orders", "-o", "json"], &env)).unwrap();
    // Backups taken meanwhile are in the history too; they move no state.
    let timeline: Vec<String> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| !["Backup", "BackedUp", "BackupFailed"].contains(&h["event"].as_str().unwrap()))
        .map(|h| h["to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        timeline,
        [
            "Submitted",
            "Up",
            "Configuring",
            "Up",
            "Restarting",
            "Up",
            "Restarting",
            "Up"
        ]
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["instance", "list", "-o", "json"], &env)).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Out of band: ALTER SYSTEM behind pgplane's back becomes visible within a resync.
    psql(&uri, "alter system set work_mem = '48MB'");
    psql(&uri, "select pg_reload_conf()");
    eventually(
        "out-of-band change observed",
        Duration::from_secs(15),
        || {
            let inst: serde_json::Value =
                serde_json::from_str(&ok(&["instance", "get", "orders", "-o", "json"], &env))
                    .unwrap();
            (inst["observed"]["config"]["work_mem"] == "48MB").then_some(())
        },
    );
    // …and is reported as drift, field by field.
    let o = run(&["drift", "-o", "json", "--exit-code"], &env);
    assert_eq!(o.status.code(), Some(2), "drift exits 2: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["drifted"], 1);
    assert_eq!(report["items"][0]["status"], "Drifted");
    assert_eq!(report["items"][0]["fields"][0]["path"], "config.work_mem");
    assert_eq!(report["items"][0]["fields"][0]["declared"], "32MB");
    assert_eq!(report["items"][0]["fields"][0]["observed"], "48MB");
    let table = ok(&["drift"], &env);
    assert!(
        table.contains("config.work_mem") && table.contains("1 of 1 instances drifted"),
        "{table}"
    );
    // Putting the declared value back removes the drift.
    psql(&uri, "alter system set work_mem = '32MB'");
    psql(&uri, "select pg_reload_conf()");
    eventually("drift gone", Duration::from_secs(15), || {
        run(&["drift", "--exit-code"], &env)
            .status
            .success()
            .then_some(())
    });

    // stop / start / restart.
    ok(&["instance", "stop", "orders", "--wait"], &env);
    assert!(psql_fails(&uri), "stopped");
    ok(&["instance", "start", "orders", "--wait"], &env);
    assert_eq!(psql(&uri, "select 1"), "1");
    ok(&["instance", "restart", "orders", "--wait"], &env);

    // Ctrl-C stops the instances; a second `up` adopts them (not re-created).
    let id_before = inst["id"].clone();
    server.signal(Signal::SIGINT);
    assert_eq!(
        server.wait_exit(Duration::from_secs(60)),
        Some(0),
        "clean shutdown"
    );
    assert!(psql_fails(&uri), "instances stop with pgplane");
    let _server = up(&data_dir, port, &log);
    assert_eq!(
        psql(&uri, "select 1"),
        "1",
        "same credentials after adoption"
    );
    let inst: serde_json::Value =
        serde_json::from_str(&ok(&["instance", "get", "orders", "-o", "json"], &env)).unwrap();
    assert_eq!(inst["id"], id_before);
    assert_eq!(inst["state"], "Up");

    // 5. delete stops the server, removes the data directory, frees the port.
    // (A deleted instance leaves only its tombstone, `i-<id>.json`.)
    let data_dirs = || {
        std::fs::read_dir(data_dir.join("instances"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with("i-") && !name.ends_with(".json")
            })
            .count()
    };
    assert!(data_dirs() > 0);
    let o = run(&["instance", "delete", "orders", "--wait"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("Deleted"), "{}", stderr(&o));
    assert_eq!(
        data_dirs(),
        0,
        "data directory and socket directory removed"
    );
    assert!(psql_fails(&uri), "port freed");
    let freed_port: u16 = uri
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    std::net::TcpListener::bind(("127.0.0.1", freed_port)).expect("the port is free again");
    for args in [
        vec!["instance", "restart", "orders"],
        vec!["instance", "update", "orders", "--config", "work_mem=1MB"],
        vec!["instance", "credentials", "orders"],
    ] {
        let o = run(&args, &env);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("instance orders is deleted"),
            "{args:?}: {}",
            stderr(&o)
        );
    }

    // Bad input: each gets a specific error and changes nothing.
    let bad = |args: &[&str], expect: &str| {
        let o = run(args, &env);
        // 1: refused by the control plane; 2: refused by argument parsing.
        assert!(matches!(o.status.code(), Some(1 | 2)), "{args:?}");
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    };
    bad(
        &["instance", "create", "Bad_Name"],
        "name: name \"Bad_Name\" must consist of lower-case letters",
    );
    bad(
        &[
            "instance",
            "create",
            "x",
            "--extension",
            "no_such_extension",
        ],
        "available: ",
    );
    bad(
        &["instance", "create", "x", "--config", "port=5433"],
        "spec.config.port: parameter \"port\" is managed by pgplane",
    );
    bad(
        &["instance", "create", "x", "--config", "data_directory=/tmp"],
        "spec.config.data_directory",
    );
    bad(
        &["instance", "create", "x", "--storage", "10GB"],
        "write \"10Gi\" (binary, what Postgres calls 10GB)",
    );
    bad(
        &["instance", "create", "x", "--config", "work_mem"],
        "KEY=VALUE",
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["instance", "list", "-o", "json"], &env)).unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    let o = run(
        &["instance", "list"],
        &[
            ("PGPLANE_ENDPOINT", env[0].1),
            ("PGPLANE_TOKEN", "pgp_not_a_token"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).to_lowercase().contains("token"),
        "{}",
        stderr(&o)
    );
}
