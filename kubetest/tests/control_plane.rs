//! The whole path on a real node: the control plane (`pgplane server`) on a
//! database of the test Postgres (`DATABASE_URL`, from scripts/test-db.sh),
//! a conductor with `--runtime kubernetes` using the service account
//! rbac.yaml gives it, and the operator. `pgplane instance create --wait`
//! becomes a running pod; an `ALTER SYSTEM` inside it shows in
//! `pgplane drift` and `pgplane instance heal` puts it back; a preloaded
//! extension rolls the pod; stop and start
//! keep the data; delete removes the pod, its Service, Secrets, ConfigMap
//! and data volume; `terraform apply` of a `pgplane_instance` runs a pod.

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
    let (pg, ip) = connect(&cluster, "k1").await;

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

    // Heal: the declared spec again, converged over the ALTER SYSTEM in
    // place; once `--wait` returns the pod runs it.
    let started = postmaster_start(&pg).await;
    let healing = Instant::now();
    ok(&["instance", "heal", "k1", "--wait"], &env);
    eprintln!("pgplane instance heal k1 --wait: {:?}", healing.elapsed());
    assert_eq!(show(&pg, "work_mem").await, "16MB", "healed in the pod");
    assert_eq!(
        postmaster_start(&pg).await,
        started,
        "healed without a restart"
    );
    poll(
        "pgplane drift no longer shows k1",
        Duration::from_secs(60),
        || {
            let o = pgplane(&["drift", "-o", "json"], &env);
            (o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("48MB"))
                .then_some(())
        },
        || String::from_utf8_lossy(&pgplane(&["drift", "-o", "json"], &env).stdout).into_owned(),
    )
    .await;

    // A preloaded extension: the pod rolls (Restarting, then Up), and runs
    // with the library loaded and the extension created.
    drop(pg);
    let rolling = Instant::now();
    ok(
        &[
            "instance",
            "update",
            "k1",
            "--extension",
            "pg_stat_statements",
            "--wait",
        ],
        &env,
    );
    eprintln!(
        "--extension pg_stat_statements → the pod rolled, Up: {:?}",
        rolling.elapsed()
    );
    let (pg, _) = connect(&cluster, "k1").await;
    assert_eq!(
        show(&pg, "shared_preload_libraries").await,
        "pg_stat_statements"
    );
    let created: i64 = pg
        .query_one(
            "select count(*) from pg_extension where extname = 'pg_stat_statements'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 1, "the extension is created");
    assert_ne!(postmaster_start(&pg).await, started, "a new server");
    let history = ok(&["instance", "history", "k1"], &env);
    assert!(history.contains("Restarting"), "{history}");

    // Stop and start: replicas 0, then 1, on the same volume.
    pg.batch_execute("create table kept (note text); insert into kept values ('before the stop')")
        .await
        .unwrap();
    drop((pg, app));
    ok(&["instance", "stop", "k1", "--wait"], &env);
    let pods = Api::<Pod>::namespaced(cluster.client(), NAMESPACE);
    gone(&pods, "k1-0", "the stopped instance's pod").await;
    let instance: serde_json::Value =
        serde_json::from_str(&ok(&["instance", "get", "k1", "-o", "json"], &env)).unwrap();
    assert_eq!(instance["state"], "Stopped", "{instance:#}");
    assert_eq!(instance["observed"]["running"], false, "{instance:#}");
    let starting = Instant::now();
    ok(&["instance", "start", "k1", "--wait"], &env);
    eprintln!("pgplane instance start k1 --wait: {:?}", starting.elapsed());
    let (pg, _) = connect(&cluster, "k1").await;
    let note: String = pg
        .query_one("select note from kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "before the stop", "the data survives a stop");
    drop(pg);

    // Delete: the pod, its Service, Secrets, ConfigMap and, by the
    // operator's default policy, its data volume.
    ok(&["instance", "delete", "k1", "--wait"], &env);
    gone(&pods, "k1-0", "the deleted instance's pod").await;
    gone(
        &Api::<k8s_openapi::api::core::v1::Service>::namespaced(cluster.client(), NAMESPACE),
        "k1",
        "the Service",
    )
    .await;
    let secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(cluster.client(), NAMESPACE);
    gone(&secrets, "k1-credentials", "the credentials Secret").await;
    gone(&secrets, "k1-roles", "the roles Secret").await;
    gone(
        &Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cluster.client(), NAMESPACE),
        "k1-config",
        "the spec ConfigMap",
    )
    .await;
    gone(
        &Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
            cluster.client(),
            NAMESPACE,
        ),
        "data-k1-0",
        "the data volume's claim",
    )
    .await;
    let instance = pgplane(&["instance", "get", "k1", "-o", "json"], &env);
    let state = serde_json::from_slice::<serde_json::Value>(&instance.stdout)
        .map(|i| i["state"].clone())
        .unwrap_or_default();
    assert!(
        !instance.status.success() || state == "Deleted",
        "the instance is gone: {}",
        String::from_utf8_lossy(&instance.stdout)
    );

    terraform_apply_reaches_a_pod(&cluster, &env, &mut operator, &mut conductor).await;
}

/// The Terraform CLI 1.15 from the tools directory (scripts/setup-terraform.sh).
fn terraform_bin() -> std::path::PathBuf {
    let tools = kubetest::tools_dir();
    let bin = tools.join("bin/terraform-1.15");
    assert!(
        bin.exists(),
        "{} not found: run `bash scripts/setup-terraform.sh`",
        bin.display()
    );
    bin
}

/// `terraform apply` of a `pgplane_instance` on this control plane, whose
/// default data plane is the cluster: a pod runs it with the declared
/// settings; `terraform destroy` removes it.
async fn terraform_apply_reaches_a_pod(
    cluster: &Cluster,
    env: &[(&str, &str)],
    operator: &mut Proc,
    conductor: &mut Proc,
) {
    cluster
        .host_path_volume("k2-data", "10Gi", POSTGRES_UID)
        .await;
    // The provider from a filesystem mirror: no registry.
    let root = cluster.dir().join("terraform");
    let mirror = root.join("mirror/registry.pgplane.io/pgplane/pgplane/0.1.0/linux_amd64");
    std::fs::create_dir_all(&mirror).unwrap();
    std::fs::copy(
        workspace_bin("terraform-provider-pgplane"),
        mirror.join("terraform-provider-pgplane_v0.1.0"),
    )
    .unwrap();
    let rc = root.join("terraform.tfrc");
    std::fs::write(
        &rc,
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n    include = [\"registry.pgplane.io/*/*\"]\n  }}\n}}\n",
            root.join("mirror").display()
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("main.tf"),
        r#"terraform {
  required_providers {
    pgplane = { source = "registry.pgplane.io/pgplane/pgplane" }
  }
}
provider "pgplane" {}
resource "pgplane_instance" "k2" {
  name   = "k2"
  config = { work_mem = "8MB" }
}
"#,
    )
    .unwrap();
    let terraform = |args: &[&str]| {
        let o = Command::new(terraform_bin())
            .args(args)
            .current_dir(&root)
            .env("TF_CLI_CONFIG_FILE", &rc)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.success(),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (ok, out) = terraform(&["init", "-input=false", "-no-color"]);
    assert!(ok, "terraform init:\n{out}");
    let applying = Instant::now();
    let (ok, out) = terraform(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(
        ok,
        "terraform apply:\n{out}\n--- conductor:\n{}\n--- operator:\n{}\n{}",
        conductor.log_tail(30),
        operator.log_tail(30),
        cluster.container_logs(NAMESPACE, "k2-0")
    );
    eprintln!(
        "terraform apply of pgplane_instance k2 on the cluster: {:?}",
        applying.elapsed()
    );
    let pods = Api::<Pod>::namespaced(cluster.client(), NAMESPACE);
    let (pg, _) = connect(cluster, "k2").await;
    assert_eq!(
        show(&pg, "work_mem").await,
        "8MB",
        "the pod runs what Terraform declared"
    );
    drop(pg);
    let (ok, out) = terraform(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    assert!(ok, "an empty plan after apply:\n{out}");
    let (ok, out) = terraform(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(ok, "terraform destroy:\n{out}");
    gone(&pods, "k2-0", "the destroyed instance's pod").await;
}

/// Connects with the instance's Secret to its pod; returns the pod's IP too.
async fn connect(cluster: &Cluster, instance: &str) -> (tokio_postgres::Client, String) {
    let pod = Api::<Pod>::namespaced(cluster.client(), NAMESPACE)
        .get(&format!("{instance}-0"))
        .await
        .unwrap();
    let ip = pod.status.unwrap().pod_ip.unwrap();
    let (pg, connection) = tokio_postgres::connect(
        &cluster
            .conninfo(NAMESPACE, &format!("{instance}-credentials"), &ip)
            .await,
        tokio_postgres::NoTls,
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {instance} at {ip}: {e}"));
    tokio::spawn(connection);
    (pg, ip)
}

async fn postmaster_start(pg: &tokio_postgres::Client) -> String {
    pg.query_one("select pg_postmaster_start_time()::text", &[])
        .await
        .unwrap()
        .get(0)
}

async fn show(pg: &tokio_postgres::Client, setting: &str) -> String {
    pg.query_one("select current_setting($1)", &[&setting])
        .await
        .unwrap()
        .get(0)
}

/// Waits until `name` is gone from `api` (a minute at most).
async fn gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let start = Instant::now();
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} ({name}) is still there after a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
