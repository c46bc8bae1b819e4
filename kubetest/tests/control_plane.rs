//! The whole path on a real node: the control plane (`pgplane server`) on a
//! database of the test Postgres (`DATABASE_URL`, from scripts/test-db.sh),
//! a conductor with `--runtime kubernetes` using the service account
//! rbac.yaml gives it, and the operator. `pgplane instance create --wait`
//! becomes a running pod; an `ALTER SYSTEM` inside it shows in
//! `pgplane drift`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kubetest::{
    run_operator, service_account_kubeconfig, workspace_bin, Cluster, Proc, POSTGRES_UID,
};

const NAMESPACE: &str = "databases";

/// A fresh database on the test Postgres, dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Database {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL must be set (eval \"$(bash scripts/test-db.sh)\")");
        let name = format!("kubetest_{}", std::process::id());
        psql(
            &admin_url,
            &format!("drop database if exists {name} with (force)"),
        );
        assert!(psql(&admin_url, &format!("create database {name}")));
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
        psql(
            &self.admin_url,
            &format!("drop database if exists {} with (force)", self.name),
        );
    }
}

fn psql(url: &str, sql: &str) -> bool {
    Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .unwrap()
        .status
        .success()
}

fn pgplane(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(workspace_bin("pgplane"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[track_caller]
fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = pgplane(args, env);
    assert!(
        o.status.success(),
        "pgplane {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Polls `check` every 200 ms until it returns `Some`; panics with `what`
/// and the last value `describe` gives after `deadline`.
async fn poll<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
    mut describe: impl FnMut() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}\n{}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_created_through_the_control_plane_runs_and_its_drift_shows() {
    let db = Database::create();
    let cluster = Cluster::start().await;
    let mut operator = run_operator(&cluster, &[("PGPLANE_RESYNC_SECS", "2")]).await;
    cluster
        .host_path_volume("k1-data", "10Gi", POSTGRES_UID)
        .await;

    let keys = ok(&["secrets", "generate-key"], &[]);
    let db_env = [
        ("PGPLANE_DATABASE_URL", db.url.as_str()),
        ("PGPLANE_SECRET_KEYS", keys.trim()),
        ("RUST_LOG", "info"),
    ];
    let listen = format!("127.0.0.1:{}", kubetest::free_port());
    let mut server = Proc::spawn(
        "pgplane server",
        Command::new(workspace_bin("pgplane"))
            .args(["server", "--listen", &listen, "--default-data-plane", "k8s"])
            .envs(db_env),
        cluster.dir().join("server.log"),
    );
    let token = ok(&["token", "create", "--org", "acme"], &db_env);
    let endpoint = format!("http://{listen}");
    let env = [
        ("PGPLANE_ENDPOINT", endpoint.as_str()),
        ("PGPLANE_TOKEN", token.trim()),
    ];
    poll(
        "the control plane answers",
        Duration::from_secs(60),
        || {
            pgplane(&["instance", "list"], &env)
                .status
                .success()
                .then_some(())
        },
        || server.log_tail(20),
    )
    .await;

    let kubeconfig =
        service_account_kubeconfig(&cluster, "pgplane-system", "pgplane-conductor").await;
    let mut conductor = Proc::spawn(
        "pgplane conductor",
        Command::new(workspace_bin("pgplane"))
            .args([
                "conductor",
                "--data-plane",
                "k8s",
                "--runtime",
                "kubernetes",
                "--namespace",
                NAMESPACE,
                "--resync-interval",
                "2s",
            ])
            .envs(db_env)
            .env("KUBECONFIG", &kubeconfig),
        cluster.dir().join("conductor.log"),
    );

    let created = Instant::now();
    let o = pgplane(
        &[
            "instance",
            "create",
            "k1",
            "--data-plane",
            "k8s",
            "--superuser-access",
            "--config",
            "work_mem=16MB",
            "--role",
            "app",
            "--database",
            "shop:app",
            "--wait",
        ],
        &env,
    );
    assert!(
        o.status.success(),
        "instance create --wait: {}\n{}\n--- conductor:\n{}\n--- operator:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        conductor.log_tail(30),
        operator.log_tail(30),
        cluster.container_logs(NAMESPACE, "k1-0")
    );
    eprintln!(
        "instance create --wait through the control plane → Up: {:?}",
        created.elapsed()
    );
    let instance: serde_json::Value =
        serde_json::from_str(&ok(&["instance", "get", "k1", "-o", "json"], &env)).unwrap();
    assert_eq!(instance["state"], "Up", "{instance:#}");
    assert_eq!(instance["connection"]["host"], "k1.databases.svc");
    assert_eq!(instance["connection"]["port"], 5432);
    assert_eq!(
        instance["observed"]["config"]["work_mem"], "16MB",
        "observed in the pod: {instance:#}"
    );
    assert_eq!(instance["observed"]["running"], true);

    // Behind pgplane's back, with the credentials the operator made.
    let pod = Api::<Pod>::namespaced(cluster.client(), NAMESPACE)
        .get("k1-0")
        .await
        .unwrap();
    let ip = pod.status.unwrap().pod_ip.unwrap();
    let (pg, connection) = tokio_postgres::connect(
        &cluster.conninfo(NAMESPACE, "k1-credentials", &ip).await,
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);

    // The declared role's password, as the operator generated it, reaches
    // the control plane's secret store and logs in to its database.
    let creds: serde_json::Value = serde_json::from_str(&ok(
        &[
            "instance",
            "credentials",
            "k1",
            "--role",
            "app",
            "-o",
            "json",
        ],
        &env,
    ))
    .unwrap();
    let roles = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(cluster.client(), NAMESPACE)
        .get("k1-roles")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    assert_eq!(
        creds["password"].as_str().map(str::as_bytes),
        Some(roles["app"].0.as_slice()),
        "the stored password is the Secret's"
    );
    assert_eq!(
        (&creds["user"], &creds["database"]),
        (&"app".into(), &"shop".into())
    );
    let conninfo = format!(
        "host={ip} port=5432 user=app password={} dbname=shop connect_timeout=10",
        creds["password"].as_str().unwrap()
    );
    let (app, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting as app with the stored password: {e}"));
    tokio::spawn(connection);
    let user: String = app
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "app");

    pg.batch_execute("alter system set work_mem = '48MB'")
        .await
        .unwrap();
    pg.batch_execute("select pg_reload_conf()").await.unwrap();
    let altered = Instant::now();
    let drift = poll(
        "pgplane drift shows the ALTER SYSTEM",
        Duration::from_secs(60),
        || {
            let o = pgplane(&["drift", "-o", "json"], &env);
            let report: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            let text = report.to_string();
            (text.contains("work_mem") && text.contains("48MB")).then_some(report)
        },
        || {
            format!(
                "drift: {}\n--- conductor:\n{}\n--- operator:\n{}",
                String::from_utf8_lossy(&pgplane(&["drift", "-o", "json"], &env).stdout),
                conductor.log_tail(20),
                operator.log_tail(20)
            )
        },
    )
    .await;
    eprintln!(
        "ALTER SYSTEM in the pod → pgplane drift shows it: {:?} (operator and conductor resync 2s)",
        altered.elapsed()
    );
    assert!(
        drift["drifted"].as_u64().unwrap_or_default() >= 1,
        "{drift:#}"
    );
    let table = ok(&["drift"], &env);
    assert!(
        table.contains("k1") && table.contains("work_mem") && table.contains("48MB"),
        "{table}"
    );
}
