//! `kill -9` of a conductor in the middle of a create: after a restart the
//! instance converges to Up, with no second data directory and no lost event.
//! Control plane and conductor run as separate processes against an external
//! Postgres (`DATABASE_URL`, from scripts/test-db.sh).

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

/// A fresh database on the test cluster; dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    pub url: String,
}

impl Database {
    fn create() -> Database {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL must be set (eval \"$(bash scripts/test-db.sh)\")");
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("e2e_{}_{n}", std::process::id());
        let _ = psql_cmd(
            &admin_url,
            &format!("drop database if exists {name} with (force)"),
        );
        assert!(psql_cmd(&admin_url, &format!("create database {name}")));
        let base = admin_url.rsplit_once('/').unwrap().0;
        Database {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql_cmd(
            &self.admin_url,
            &format!("drop database if exists {} with (force)", self.name),
        );
    }
}

fn psql_cmd(url: &str, sql: &str) -> bool {
    std::process::Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .unwrap()
        .status
        .success()
}

/// `pgplane server` on the database of `db_env`, its first token (org
/// `acme`) and the endpoint, once it answers.
struct ControlPlane {
    proc: Proc,
    endpoint: String,
    token: String,
}

impl ControlPlane {
    fn start(db_env: &[(&str, &str)], log: &std::path::Path) -> ControlPlane {
        let listen = format!("127.0.0.1:{}", free_port());
        let proc = spawn(
            "pgplane server",
            &["server", "--listen", &listen],
            db_env,
            log,
        );
        let token = ok(&["token", "create", "--org", "acme"], db_env)
            .trim()
            .to_owned();
        let cp = ControlPlane {
            proc,
            endpoint: format!("http://{listen}"),
            token,
        };
        eventually("control plane up", Duration::from_secs(30), || {
            run(&["instance", "list"], &cp.env())
                .status
                .success()
                .then_some(())
        });
        cp
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("PGPLANE_ENDPOINT", self.endpoint.as_str()),
            ("PGPLANE_TOKEN", self.token.as_str()),
        ]
    }
}

#[test]
fn conductor_killed_mid_create_converges_after_restart() {
    let db = Database::create();
    let scratch = scratch_dir();
    let log = scratch.path().join("e2e.log");
    let instances = scratch.path().join("instances");
    let keys = ok(&["secrets", "generate-key"], &[]);
    let db_env = [
        ("PGPLANE_DATABASE_URL", db.url.as_str()),
        ("PGPLANE_SECRET_KEYS", keys.as_str()),
    ];

    let mut server = ControlPlane::start(&db_env, &log);
    assert!(server.token.starts_with("pgp_"));
    let env = server.env();

    let conductor_args = |pause: bool| {
        let mut a = vec![
            "conductor".to_owned(),
            "--data-dir".to_owned(),
            instances.to_str().unwrap().to_owned(),
            "--visibility-timeout".to_owned(),
            "2s".to_owned(),
        ];
        if pause {
            a.extend(["--debug-create-pause".to_owned(), "60s".to_owned()]);
        }
        a
    };
    let args: Vec<String> = conductor_args(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let conductor = spawn("pgplane conductor", &args, &db_env, &log);

    ok(
        &["instance", "create", "orders", "--extension", "hstore"],
        &env,
    );
    // Wait until the data directory exists (the conductor is mid-create), then kill -9.
    let data_dir = eventually("data directory created", Duration::from_secs(60), || {
        std::fs::read_dir(&instances).ok()?.find_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("i-") && !name.contains('.') && e.path().join("PG_VERSION").exists())
                .then(|| e.path())
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    conductor.signal(Signal::SIGKILL);
    drop(conductor);
    let inst: serde_json::Value =
        serde_json::from_str(&ok(&["instance", "get", "orders", "-o", "json"], &env)).unwrap();
    assert_eq!(inst["state"], "Submitted", "the create never completed");

    // Restart without the pause: the unacknowledged event comes back after
    // the visibility timeout and the create resumes.
    let args: Vec<String> = conductor_args(false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _conductor = spawn("pgplane conductor", &args, &db_env, &log);
    let o = run(&["instance", "get", "orders"], &env);
    assert!(o.status.success());
    let waited = run(&["instance", "start", "orders"], &env);
    assert_eq!(
        waited.status.code(),
        Some(1),
        "start on a Submitted instance is illegal"
    );
    assert!(
        stderr(&waited).contains("cannot Start an instance that is Submitted"),
        "{}",
        stderr(&waited)
    );
    eventually("Up after restart", Duration::from_secs(60), || {
        let inst: serde_json::Value =
            serde_json::from_str(&ok(&["instance", "get", "orders", "-o", "json"], &env)).unwrap();
        (inst["state"] == "Up").then_some(())
    });
    let data_dirs: Vec<String> = std::fs::read_dir(&instances)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("i-") && !n.contains('.'))
        .collect();
    assert_eq!(
        data_dirs.len(),
        1,
        "no second data directory: {data_dirs:?}"
    );
    assert!(data_dir.exists());
    let uri = ok(&["instance", "credentials", "orders"], &env)
        .trim()
        .to_owned();
    assert_eq!(
        psql(
            &uri,
            "select extname from pg_extension where extname = 'hstore'"
        ),
        "hstore"
    );
    let history: serde_json::Value =
        serde_json::from_str(&ok(&["instance", "history", "orders", "-o", "json"], &env)).unwrap();
    assert_eq!(
        history["items"].as_array().unwrap().len(),
        2,
        "Create, Created: {history}"
    );

    ok(&["instance", "delete", "orders", "--wait"], &env);
    server.proc.signal(Signal::SIGTERM);
    server.proc.wait_exit(Duration::from_secs(30));
}

#[test]
fn a_conductor_started_first_waits_for_the_control_plane_and_changes_no_schema() {
    let db = Database::create();
    let scratch = scratch_dir();
    let conductor_log = scratch.path().join("conductor.log");
    let keys = ok(&["secrets", "generate-key"], &[]);
    let db_env = [
        ("PGPLANE_DATABASE_URL", db.url.as_str()),
        ("PGPLANE_SECRET_KEYS", keys.as_str()),
    ];
    let _conductor = spawn(
        "pgplane conductor",
        &["conductor", "--runtime", "simulated"],
        &db_env,
        &conductor_log,
    );
    eventually(
        "the conductor says what it waits for",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&conductor_log)
                .unwrap()
                .contains("waiting for the control plane")
                .then_some(())
        },
    );
    assert_eq!(
        psql(
            &db.url,
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname in ('public', 'pgmq')"
        ),
        "0",
        "a data plane creates nothing in the control plane's database"
    );
    assert!(std::fs::read_to_string(&conductor_log)
        .unwrap()
        .contains("no migration is applied yet"));

    let server = ControlPlane::start(&db_env, &scratch.path().join("server.log"));
    let env = server.env();
    ok(
        &["instance", "create", "orders", "--wait", "--timeout", "60s"],
        &env,
    );
    let inst = json(&["instance", "get", "orders"], &env);
    assert_eq!(inst["state"], "Up", "{inst}");
}

/// A login role on the test cluster, dropped after the databases that name
/// it (declare it before them).
struct Role {
    admin_url: String,
    name: String,
}

impl Role {
    fn create(admin_url: &str, password: &str) -> Role {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("dp_e2e_{}_{n}", std::process::id());
        let _ = psql_cmd(admin_url, &format!("drop role if exists {name}"));
        assert!(psql_cmd(
            admin_url,
            &format!("create role {name} login password '{password}'")
        ));
        Role {
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        psql_cmd(
            &self.admin_url,
            &format!("drop role if exists {}", self.name),
        );
    }
}

/// Runs `sql` as the URL's role; the error text when it fails.
fn refused(url: &str, sql: &str) -> Option<String> {
    let o = std::process::Command::new("psql")
        .args(["-X", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .unwrap();
    (!o.status.success()).then(|| String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_conductor_with_only_its_grants_runs_instances_and_reaches_nothing_else() {
    let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let role = Role::create(&admin_url, "dp-pw");
    let db = Database::create();
    let scratch = scratch_dir();
    let log = scratch.path().join("e2e.log");
    let keys = ok(&["secrets", "generate-key"], &[]);
    let db_env = [
        ("PGPLANE_DATABASE_URL", db.url.as_str()),
        ("PGPLANE_SECRET_KEYS", keys.as_str()),
    ];
    let server = ControlPlane::start(&db_env, &log);
    let env = server.env();

    let o = run(
        &["data-plane", "grant", "local", "--role", "no_such_role"],
        &db_env,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let granted = run(
        &["data-plane", "grant", "local", "--role", &role.name],
        &db_env,
    );
    assert!(granted.status.success(), "{}", stderr(&granted));

    // The conductor connects as the granted role.
    let (_, rest) = db.url.split_once("://").unwrap();
    let (_, host_and_db) = rest.split_once('@').unwrap();
    let restricted = format!("postgres://{}:dp-pw@{host_and_db}", role.name);
    let instances = scratch.path().join("instances");
    let _conductor = spawn(
        "pgplane conductor",
        &[
            "conductor",
            "--data-dir",
            instances.to_str().unwrap(),
            "--resync-interval",
            "1s",
        ],
        &[("PGPLANE_DATABASE_URL", restricted.as_str())],
        &scratch.path().join("conductor.log"),
    );
    let conductor_log = || std::fs::read_to_string(scratch.path().join("conductor.log")).unwrap();
    let created = run(
        &["instance", "create", "orders", "--wait", "--timeout", "30s"],
        &env,
    );
    assert!(
        created.status.success(),
        "{}\nconductor:\n{}",
        stderr(&created),
        conductor_log()
    );
    let uri = ok(&["instance", "credentials", "orders"], &env)
        .trim()
        .to_owned();
    assert_eq!(psql(&uri, "select 1"), "1", "the stored password works");
    eventually("a log chunk shipped", Duration::from_secs(60), || {
        (psql(&db.url, "select count(*) from instance_logs") != "0").then_some(())
    });
    let log = conductor_log();
    assert!(
        !log.contains("permission denied"),
        "the grants cover what a conductor does:\n{log}"
    );

    // Everything else is out of its reach.
    for sql in [
        "select count(*) from tokens",
        "select password from instance_secrets",
        "select password from role_secrets",
        "select chunk from instance_logs",
        "select * from instances",
        "select * from sources",
        "update sealing_keys set current = false",
        "select * from pgmq.q_pgplane_status",
        "delete from pgmq.q_pgplane_status",
        "create table evil (x int)",
        "create table pgmq.evil (x int)",
        "drop table instances",
        "alter table instance_secrets add column x int",
    ] {
        let why = refused(&restricted, sql).unwrap_or_else(|| panic!("{sql:?} was allowed"));
        assert!(
            why.contains("permission denied") || why.contains("must be owner"),
            "{sql}: {why}"
        );
    }
}
