//! The Kubernetes data plane on a real single-node cluster (the `kubetest`
//! harness: kubelet, containerd, the offline instance image): the cold
//! start of the cluster to node Ready, then create → connectable of a
//! `PostgresInstance` (the operator's StatefulSet, Service, Secret and
//! ConfigMap, the agent converging in the pod) next to the floor, a bare
//! Pod of the same image on an emptyDir with a fixed password, each the
//! median of N.

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use kubetest::{run_operator, Cluster, INSTANCE_IMAGE, POSTGRES_UID};

use crate::harness::{median, ms};

const NAMESPACE: &str = "databases";
/// The longest a pod may take to become connectable.
const DEADLINE: Duration = Duration::from_secs(180);

pub async fn kube(runs: usize) -> anyhow::Result<()> {
    let cluster = Cluster::start().await;
    println!(
        "kube: cluster start → node Ready: {}",
        ms(cluster.start_to_ready)
    );
    let client = cluster.client();
    let mut operator = run_operator(&cluster, &[]).await;

    let mut floor = Vec::with_capacity(runs);
    for i in 0..runs {
        floor.push(bare_pod(&cluster, &format!("bare-{i}")).await?);
    }
    let instances: Api<crd::PostgresInstance> = Api::namespaced(client.clone(), NAMESPACE);
    let mut pgplane = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = format!("bench-{i}");
        cluster
            .host_path_volume(&format!("{name}-data"), "1Gi", POSTGRES_UID)
            .await;
        let instance: crd::PostgresInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "pgplane.io/v1",
            "kind": "PostgresInstance",
            "metadata": { "name": name, "namespace": NAMESPACE },
            "spec": {
                "postgresVersion": "15",
                "resources": { "cpu": "500m", "memory": "1Gi" },
                "storage": "1Gi",
                "config": { "work_mem": "16MB" },
            },
        }))?;
        let created = Instant::now();
        instances.create(&PostParams::default(), &instance).await?;
        let pod = format!("{name}-0");
        let secret = format!("{name}-credentials");
        let elapsed = connectable(
            &cluster,
            NAMESPACE,
            &pod,
            created,
            Credentials::Secret(&secret),
        )
        .await
        .with_context(|| {
            format!(
                "{name}: not connectable\n--- operator:\n{}\n{}",
                operator.log_tail(30),
                cluster.container_logs(NAMESPACE, &pod)
            )
        })?;
        println!("  {name}: create → connectable {}", ms(elapsed));
        pgplane.push(elapsed);
        instances.delete(&name, &DeleteParams::default()).await?;
    }
    let floor = median(&mut floor);
    let pgplane = median(&mut pgplane);
    println!(
        "kube: PostgresInstance create → connectable, median of {runs}: {} (floor: a bare Pod of {INSTANCE_IMAGE} → connectable, {}): {:.2}× (goal ≤ 1.5×)",
        ms(pgplane),
        ms(floor),
        pgplane.as_secs_f64() / floor.as_secs_f64()
    );
    Ok(())
}

/// A bare Pod of the instance image (as kubetest's node test runs it):
/// create → a query answers.
async fn bare_pod(cluster: &Cluster, name: &str) -> anyhow::Result<Duration> {
    let client = cluster.client();
    let (spec, pod) = kubetest::bare_pod(name, "bare-secret");
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &spec)
        .await?;
    let pods = Api::<Pod>::namespaced(client, "default");
    let created = Instant::now();
    pods.create(&PostParams::default(), &pod).await?;
    let elapsed = connectable(
        cluster,
        "default",
        name,
        created,
        Credentials::Password("bare-secret"),
    )
    .await
    .with_context(|| cluster.container_logs("default", name))?;
    println!("  {name}: bare pod → connectable {}", ms(elapsed));
    pods.delete(name, &DeleteParams::default()).await?;
    Ok(elapsed)
}

/// Who connects: `postgres` with a fixed password, or the user and
/// password of the operator's Secret (once it exists).
enum Credentials<'a> {
    Password(&'a str),
    Secret(&'a str),
}

impl Credentials<'_> {
    async fn conninfo(&self, cluster: &Cluster, namespace: &str) -> anyhow::Result<Option<String>> {
        let name = match self {
            Credentials::Password(password) => {
                return Ok(Some(format!(
                    "user=postgres password={password} dbname=postgres"
                )))
            }
            Credentials::Secret(name) => name,
        };
        let Some(secret) = Api::<Secret>::namespaced(cluster.client(), namespace)
            .get_opt(name)
            .await?
        else {
            return Ok(None);
        };
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .with_context(|| format!("the Secret {namespace}/{name} has no {key}"))
        };
        Ok(Some(format!(
            "user={} password={} dbname=postgres",
            text("username")?,
            text("password")?
        )))
    }
}

/// The time from `since` until `select 1` answers at the pod's IP.
async fn connectable(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    since: Instant,
    credentials: Credentials<'_>,
) -> anyhow::Result<Duration> {
    let pods = Api::<Pod>::namespaced(cluster.client(), namespace);
    loop {
        anyhow::ensure!(since.elapsed() < DEADLINE, "{pod}: not within {DEADLINE:?}");
        let ip = pods.get_opt(pod).await?.and_then(|p| p.status?.pod_ip);
        if let (Some(ip), Some(credentials)) = (ip, credentials.conninfo(cluster, namespace).await?)
        {
            let conninfo = format!("host={ip} port=5432 connect_timeout=2 {credentials}");
            if let Ok((client, connection)) =
                tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                if client.simple_query("select 1").await.is_ok() {
                    return Ok(since.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
