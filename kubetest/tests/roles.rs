//! Declared roles log in on a real node: the operator keeps one Secret,
//! `NAME-roles`, with a password per present role, mounts it into the pod,
//! and the agent sets each password. A role added later gets its password
//! without the pod restarting; a role declared absent loses its key. No
//! password shows in the logs or the resource's status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crd::PostgresInstance;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubetest::{run_operator, wait_for, Cluster, Proc, POSTGRES_UID};

const NAMESPACE: &str = "databases";
const NAME: &str = "shopdb";
const POD: &str = "shopdb-0";

/// The roles' Secret's keys and values.
async fn role_passwords(cluster: &Cluster) -> BTreeMap<String, String> {
    Api::<Secret>::namespaced(cluster.client(), NAMESPACE)
        .get(&crd::roles_secret_name(NAME))
        .await
        .unwrap_or_else(|e| panic!("reading the roles' Secret: {e}"))
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// Connects as `user` to `dbname`, retrying until `deadline` (the kubelet
/// refreshes the mounted Secret, then the agent's next converge sets the
/// password).
async fn connect_as(
    cluster: &Cluster,
    operator: &mut Proc,
    ip: &str,
    user: &str,
    password: &str,
    dbname: &str,
    deadline: Duration,
) -> tokio_postgres::Client {
    let conninfo = format!(
        "host={ip} port=5432 user={user} password={password} dbname={dbname} connect_timeout=10"
    );
    let start = Instant::now();
    loop {
        match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return client;
            }
            Err(_) if start.elapsed() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!(
                "connecting as {user} to {dbname} at {ip}: {e}\n--- operator:\n{}\n{}",
                operator.log_tail(30),
                cluster.container_logs(NAMESPACE, POD)
            ),
        }
    }
}

async fn postmaster_start(pg: &tokio_postgres::Client) -> String {
    pg.query_one("select pg_postmaster_start_time()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until the agent has converged `generation` and the instance is Ready.
async fn converged(cluster: &Cluster, operator: &mut Proc, generation: i64) -> PostgresInstance {
    let instances: Api<PostgresInstance> = Api::namespaced(cluster.client(), NAMESPACE);
    wait_for(&instances, NAME, Duration::from_secs(180), |pi| {
        let status = pi.status.as_ref()?;
        (status.converged_generation == Some(generation)
            && status.is_true(crd::ConditionType::Ready))
        .then(|| Ok(pi.clone()))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "generation {generation} never converged: {e}\n--- operator:\n{}\n{}",
            operator.log_tail(30),
            cluster.container_logs(NAMESPACE, POD)
        )
    })
}

async fn set_roles(cluster: &Cluster, roles: serde_json::Value) -> i64 {
    Api::<PostgresInstance>::namespaced(cluster.client(), NAMESPACE)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "roles": roles } })),
        )
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_roles_log_in_with_the_operators_passwords() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let mut operator = run_operator(&cluster, &[("PGPLANE_RESYNC_SECS", "2")]).await;
    cluster
        .host_path_volume("shopdb-data", "1Gi", POSTGRES_UID)
        .await;

    let instances: Api<PostgresInstance> = Api::namespaced(client.clone(), NAMESPACE);
    let instance: PostgresInstance = serde_json::from_value(serde_json::json!({
        "apiVersion": "pgplane.io/v1",
        "kind": "PostgresInstance",
        "metadata": { "name": NAME, "namespace": NAMESPACE },
        "spec": {
            "postgresVersion": "15",
            "resources": { "cpu": "500m", "memory": "1Gi" },
            "storage": "1Gi",
            "roles": [{ "name": "app" }],
            "databases": [{ "name": "shop", "owner": "app" }],
        },
    }))
    .unwrap();
    instances
        .create(&PostParams::default(), &instance)
        .await
        .unwrap();
    let pod = cluster
        .pod_ready(NAMESPACE, POD, Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator:\n{}", operator.log_tail(30)));
    let pod_uid = pod.uid();
    let ip = pod.status.unwrap().pod_ip.unwrap();
    converged(&cluster, &mut operator, 1).await;

    // The Secret: one key per present role, owned by the instance.
    let first = role_passwords(&cluster).await;
    assert_eq!(first.keys().collect::<Vec<_>>(), ["app"]);
    assert_eq!(first["app"].len(), 32);
    let secret = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get(&crd::roles_secret_name(NAME))
        .await
        .unwrap();
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("PostgresInstance", NAME)
    );

    let app = connect_as(
        &cluster,
        &mut operator,
        &ip,
        "app",
        &first["app"],
        "shop",
        Duration::from_secs(60),
    )
    .await;
    let wrong = format!(
        "host={ip} port=5432 user=app password=not-{} dbname=shop connect_timeout=10",
        first["app"]
    );
    assert!(
        tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .is_err(),
        "a wrong password is refused"
    );
    let (user, db): (String, String) = {
        let row = app
            .query_one("select current_user::text, current_database()::text", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((user.as_str(), db.as_str()), ("app", "shop"));
    app.batch_execute("create table orders (id int primary key)")
        .await
        .expect("app owns shop");
    let started = postmaster_start(&app).await;

    // A role added later: a new key, the old one unchanged, and the new
    // role logs in without a restart.
    let added = Instant::now();
    let generation = set_roles(
        &cluster,
        serde_json::json!([{ "name": "app" }, { "name": "reporting" }]),
    )
    .await;
    converged(&cluster, &mut operator, generation).await;
    let second = role_passwords(&cluster).await;
    assert_eq!(second.keys().collect::<Vec<_>>(), ["app", "reporting"]);
    assert_eq!(
        second["app"], first["app"],
        "a stored password never changes"
    );
    let reporting = connect_as(
        &cluster,
        &mut operator,
        &ip,
        "reporting",
        &second["reporting"],
        "postgres",
        Duration::from_secs(120),
    )
    .await;
    eprintln!(
        "role added to the spec → it logs in with its Secret's password: {:?}",
        added.elapsed()
    );
    assert_eq!(postmaster_start(&reporting).await, started, "no restart");
    let pod = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .get(POD)
        .await
        .unwrap();
    assert_eq!(pod.uid(), pod_uid, "the same pod");
    drop(reporting);

    // Declared absent: dropped, and its key goes.
    let generation = set_roles(
        &cluster,
        serde_json::json!([{ "name": "app" }, { "name": "reporting", "ensure": "absent" }]),
    )
    .await;
    let pi = converged(&cluster, &mut operator, generation).await;
    let third = role_passwords(&cluster).await;
    assert_eq!(third.keys().collect::<Vec<_>>(), ["app"]);
    assert_eq!(third["app"], first["app"]);
    let gone: i64 = app
        .query_one(
            "select count(*) from pg_roles where rolname = 'reporting'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);

    // No password in the status or the logs.
    let status = serde_json::to_string(&pi.status).unwrap();
    let logs = format!(
        "{}\n{}\n{}",
        operator.log_tail(100_000),
        cluster.container_logs(NAMESPACE, POD),
        cluster.log_tail("kubelet", 100_000)
    );
    for password in [&second["app"], &second["reporting"]] {
        assert!(
            !status.contains(password.as_str()),
            "a password in the status"
        );
        assert!(!logs.contains(password.as_str()), "a password in a log");
    }
}
