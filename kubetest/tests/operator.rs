//! The examples in examples/kubernetes on a real node: the CRD and
//! rbac.yaml applied as they are, the operator running as a process with
//! the permissions rbac.yaml grants its service account and the settings
//! deploy.yaml gives it, and instance.yaml's PostgresInstance becoming a
//! Ready pod whose Postgres takes the password from the operator's Secret
//! and runs the spec's configuration and extensions.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crd::{ConditionStatus, ConditionType, PostgresInstance};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, PostParams};
use kube::{Api, ResourceExt};
use kubetest::{
    apply_file, parse_file, repo_root, wait_for, workspace_bin, Cluster, Proc, POSTGRES_UID,
};

/// The operator container's environment in deploy.yaml (plain values only).
fn operator_env(deploy: &[DynamicObject]) -> Vec<(String, String)> {
    let operator = deploy
        .iter()
        .find(|o| o.name_any() == "pgplane-operator")
        .expect("deploy.yaml has the pgplane-operator Deployment");
    let container = &operator.data["spec"]["template"]["spec"]["containers"][0];
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// A kubeconfig for the cluster's API server with a token of `namespace/sa`.
async fn service_account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    sa: &str,
) -> std::path::PathBuf {
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": { "audiences": [], "expirationSeconds": 3600 },
    }))
    .unwrap();
    let api: Api<ServiceAccount> = Api::namespaced(cluster.client(), namespace);
    let token = api
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let admin = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    config["users"][0]["user"] =
        serde_yaml::to_value(serde_json::json!({ "token": token })).unwrap();
    let path = cluster.dir().join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_instance_runs_on_a_real_node() {
    let cluster = Cluster::start().await;
    eprintln!("cluster start → node Ready: {:?}", cluster.start_to_ready);
    let client = cluster.client();
    let root = repo_root();

    apply_file(
        &client,
        &root.join("crd/pgplane.io_postgresinstances.yaml"),
        |_| true,
    )
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for(
        &crds,
        "postgresinstances.pgplane.io",
        Duration::from_secs(60),
        |crd| {
            let established = crd
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(Ok(()))
        },
    )
    .await
    .unwrap();
    apply_file(&client, &root.join("examples/kubernetes/rbac.yaml"), |_| {
        true
    })
    .await;
    // deploy.yaml's Deployments need images of their own and an in-cluster
    // route to the API server (kube-proxy), which this node does not have:
    // the operator runs as a process, with the Deployment's settings.
    let deploy = parse_file(&root.join("examples/kubernetes/deploy.yaml"));

    let kubeconfig =
        service_account_kubeconfig(&cluster, "pgplane-system", "pgplane-operator").await;
    let log = std::fs::File::create(cluster.dir().join("operator.log")).unwrap();
    let mut operator = Command::new(workspace_bin("pgplane-operator"));
    operator
        .env("KUBECONFIG", &kubeconfig)
        .env(
            "PGPLANE_ADMIN_ADDR",
            format!("127.0.0.1:{}", kubetest::free_port()),
        )
        .env("POD_NAMESPACE", "pgplane-system")
        .env("POD_NAME", "pgplane-operator-test")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    for (name, value) in operator_env(&deploy) {
        operator.env(name, value);
    }
    let mut operator = Proc::spawn(
        "pgplane-operator",
        &mut operator,
        cluster.dir().join("operator.log"),
    );

    // What a storage provisioner would offer the StatefulSet's claim.
    let instance_path = root.join("examples/kubernetes/instance.yaml");
    let instance: PostgresInstance =
        serde_yaml::from_str(&std::fs::read_to_string(&instance_path).unwrap()).unwrap();
    cluster
        .host_path_volume("orders-data", &instance.spec.storage, POSTGRES_UID)
        .await;
    let created = Instant::now();
    apply_file(&client, &instance_path, |_| true).await;

    let namespace = instance.namespace().unwrap();
    let name = instance.name_any();
    let pod = cluster
        .pod_ready(&namespace, &format!("{name}-0"), Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator:\n{}", operator.log_tail(30)));
    let ip = pod.status.unwrap().pod_ip.unwrap();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let data = secrets
        .get(&format!("{name}-credentials"))
        .await
        .unwrap()
        .data
        .unwrap();
    let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
    let (pg, conn) = tokio_postgres::connect(
        &format!(
            "host={ip} port=5432 user={} password={} dbname=postgres connect_timeout=10",
            text("username"),
            text("password")
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "connecting to {ip}:5432 with the Secret's credentials: {e}\n{}",
            cluster.container_logs(&namespace, &format!("{name}-0"))
        )
    });
    eprintln!(
        "PostgresInstance create → Postgres connectable: {:?}",
        created.elapsed()
    );
    tokio::spawn(conn);

    // The agent converges to the ConfigMap's spec after the server is up:
    // instance.yaml's parameters and extensions arrive.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = pg
            .query_one(
                "select current_setting('max_connections'), current_setting('work_mem'), \
                 array(select extname::text from pg_extension order by 1)",
                &[],
            )
            .await
            .unwrap();
        let (max_connections, work_mem, extensions): (String, String, Vec<String>) =
            (row.get(0), row.get(1), row.get(2));
        if max_connections == "200"
            && work_mem == "16MB"
            && extensions.iter().any(|e| e == "hstore")
            && extensions.iter().any(|e| e == "pg_stat_statements")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spec did not arrive: max_connections {max_connections}, work_mem {work_mem}, extensions {extensions:?}\n{}",
            cluster.container_logs(&namespace, &format!("{name}-0"))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let instances: Api<PostgresInstance> = Api::namespaced(client.clone(), &namespace);
    wait_for(&instances, &name, Duration::from_secs(60), |pi| {
        let ready = pi
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == ConditionType::Ready && c.status == ConditionStatus::True);
        ready.then_some(Ok(()))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "PostgresInstance {namespace}/{name} not Ready: {e}\n--- operator:\n{}",
            operator.log_tail(30)
        )
    });
}
