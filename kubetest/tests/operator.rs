//! The examples in examples/kubernetes on a real node: the CRD and
//! rbac.yaml applied as they are, the operator running as a process with
//! the permissions rbac.yaml grants its service account and the settings
//! deploy.yaml gives it, and instance.yaml's PostgresInstance becoming a
//! Ready pod whose Postgres takes the password from the operator's Secret
//! and runs the spec's configuration and extensions, which the status's
//! observed spec shows.

use std::time::{Duration, Instant};

use crd::{ConditionStatus, ConditionType, PostgresInstance};
use kube::{Api, ResourceExt};
use kubetest::{apply_file, repo_root, run_operator, wait_for, Cluster, POSTGRES_UID};

#[tokio::test(flavor = "multi_thread")]
async fn the_example_instance_runs_on_a_real_node() {
    let cluster = Cluster::start().await;
    eprintln!("cluster start → node Ready: {:?}", cluster.start_to_ready);
    let client = cluster.client();
    let root = repo_root();

    let mut operator = run_operator(&cluster, &[]).await;

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

    let (pg, conn) = tokio_postgres::connect(
        &cluster
            .conninfo(&namespace, &format!("{name}-credentials"), &ip)
            .await,
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
    // Ready, with what the agent in the pod observes in the status.
    wait_for(&instances, &name, Duration::from_secs(60), |pi| {
        let status = pi.status.as_ref()?;
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == ConditionType::Ready && c.status == ConditionStatus::True);
        let observed = status.observed_spec.as_ref()?;
        let runs_the_spec = observed.running
            && observed.config.get("work_mem").map(String::as_str) == Some("16MB")
            && observed.config.get("max_connections").map(String::as_str) == Some("200")
            && observed.extensions.iter().any(|e| e == "hstore")
            && observed.extensions.iter().any(|e| e == "pg_stat_statements");
        (ready && runs_the_spec).then_some(Ok(()))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "PostgresInstance {namespace}/{name} not Ready with the spec observed: {e}\n--- operator:\n{}",
            operator.log_tail(30)
        )
    });
}
