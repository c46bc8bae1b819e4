//! What runs in the pod reaches the resource's status on a real node: the
//! agent observes Postgres and the operator (a process, as in operator.rs,
//! with a short resync) writes `status.observedSpec`. A reload-only change
//! applies in place; an `ALTER SYSTEM` behind pgplane's back shows within one
//! resync; a killed server is started again in its pod and the status
//! counts it; a deleted pod comes back on the same volume with its data.

use std::time::{Duration, Instant};

use crd::{ConditionType, PostgresInstance};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubetest::{run_operator, wait_for, Cluster, Proc, POSTGRES_UID};

const NAMESPACE: &str = "databases";
const NAME: &str = "ledger";
const POD: &str = "ledger-0";
/// The operator's resync in this test, in seconds.
const RESYNC_SECS: u64 = 2;

/// Connects as the Secret's user to the pod at `ip`.
async fn connect(cluster: &Cluster, ip: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &cluster
            .conninfo(NAMESPACE, &format!("{NAME}-credentials"), ip)
            .await,
        tokio_postgres::NoTls,
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "connecting to {ip}:5432 with the Secret's credentials: {e}\n{}",
            cluster.container_logs(NAMESPACE, POD)
        )
    });
    tokio::spawn(conn);
    client
}

async fn postmaster_start(pg: &tokio_postgres::Client) -> String {
    pg.query_one("select pg_postmaster_start_time()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until the status's observed `work_mem` is `value` (and, when
/// given, the agent has converged `generation`); returns the resource.
async fn observed_work_mem(
    cluster: &Cluster,
    operator: &mut Proc,
    value: &str,
    generation: Option<i64>,
    deadline: Duration,
) -> PostgresInstance {
    let instances: Api<PostgresInstance> = Api::namespaced(cluster.client(), NAMESPACE);
    wait_for(&instances, NAME, deadline, |pi| {
        let status = pi.status.as_ref()?;
        let observed = status.observed_spec.as_ref()?;
        let converged = generation.is_none_or(|g| status.converged_generation == Some(g));
        (observed.config.get("work_mem").map(String::as_str) == Some(value) && converged)
            .then(|| Ok(pi.clone()))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "status.observedSpec never showed work_mem = {value} (generation {generation:?}): {e}\n--- operator:\n{}\n{}",
            operator.log_tail(30),
            cluster.container_logs(NAMESPACE, POD)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_shows_what_the_pod_runs() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let resync = RESYNC_SECS.to_string();
    let mut operator = run_operator(&cluster, &[("PGPLANE_RESYNC_SECS", &resync)]).await;
    cluster
        .host_path_volume("ledger-data", "1Gi", POSTGRES_UID)
        .await;

    // A superuser instance, so that the test can change settings behind
    // pgplane's back as a tenant with that opt-in can.
    let instances: Api<PostgresInstance> = Api::namespaced(client.clone(), NAMESPACE);
    let instance: PostgresInstance = serde_json::from_value(serde_json::json!({
        "apiVersion": "pgplane.io/v1",
        "kind": "PostgresInstance",
        "metadata": { "name": NAME, "namespace": NAMESPACE },
        "spec": {
            "postgresVersion": "15",
            "resources": { "cpu": "500m", "memory": "1Gi" },
            "storage": "1Gi",
            "superuserAccess": true,
            "config": { "work_mem": "16MB" },
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
    let ip = pod.status.unwrap().pod_ip.unwrap();
    let pi = observed_work_mem(
        &cluster,
        &mut operator,
        "16MB",
        Some(1),
        Duration::from_secs(90),
    )
    .await;
    let status = pi.status.unwrap();
    let observed = status.observed_spec.clone().unwrap();
    assert!(observed.running, "{observed:?}");
    assert_eq!(observed.postgres_version, "15");
    assert_eq!(observed.superuser_access, Some(true));
    assert!(
        status.is_true(ConditionType::Ready),
        "{:?}",
        status.conditions
    );
    let pg = connect(&cluster, &ip).await;
    let started = postmaster_start(&pg).await;
    assert!(
        status.server_started_at.is_some(),
        "the status has the server's start time"
    );
    pg.batch_execute("create table entries (id int primary key, note text); insert into entries values (1, 'before the pod was deleted')")
        .await
        .unwrap();

    // A reload-only change: applied in place, and observed.
    let changed = Instant::now();
    let patched = instances
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "config": { "work_mem": "32MB" } } })),
        )
        .await
        .unwrap();
    let generation = patched.metadata.generation.unwrap();
    let pi = observed_work_mem(
        &cluster,
        &mut operator,
        "32MB",
        Some(generation),
        Duration::from_secs(180),
    )
    .await;
    eprintln!(
        "work_mem 16MB → 32MB in the spec → status.observedSpec shows it: {:?}",
        changed.elapsed()
    );
    let work_mem: String = pg
        .query_one("select current_setting('work_mem')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(work_mem, "32MB");
    assert_eq!(
        postmaster_start(&pg).await,
        started,
        "a reload-only change restarts nothing"
    );
    assert_eq!(
        pi.status.unwrap().server_started_at,
        status.server_started_at,
        "the status's start time stays"
    );

    // Behind pgplane's back: drift within one resync.
    pg.batch_execute("alter system set work_mem = '48MB'")
        .await
        .unwrap();
    pg.batch_execute("select pg_reload_conf()").await.unwrap();
    let drifted = Instant::now();
    observed_work_mem(
        &cluster,
        &mut operator,
        "48MB",
        None,
        Duration::from_secs(RESYNC_SECS * 5 + 10),
    )
    .await;
    eprintln!(
        "ALTER SYSTEM work_mem = 48MB → status.observedSpec shows it: {:?} (resync {RESYNC_SECS}s)",
        drifted.elapsed()
    );

    // The server dies (killed with its own OS user's rights, as a superuser
    // tenant can): the agent starts it again in the pod, and the status
    // counts the restart and says how the server ended.
    let crashed = Instant::now();
    let _killed = pg
        .batch_execute(
            "copy (select 1) to program 'read pid < /var/lib/postgresql/data/pgdata/postmaster.pid; kill -9 $pid'",
        )
        .await;
    let mut last = None;
    let restarted = wait_for(&instances, NAME, Duration::from_secs(60), |pi| {
        last = pi.status.clone();
        let status = pi.status.as_ref()?;
        let again = status.server_restarts == Some(1)
            && status.observed_spec.as_ref()?.running
            && status.server_started_at.is_some();
        again.then(|| Ok(status.clone()))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the status never showed the killed server running again: {}\nstatus: {last:#?}\n--- operator:\n{}\n{}",
            e.split("; last seen").next().unwrap_or_default(),
            operator.log_tail(30),
            cluster.container_logs(NAMESPACE, POD)
        )
    });
    eprintln!(
        "postmaster killed → running again, status.serverRestarts 1: {:?}",
        crashed.elapsed()
    );
    assert_eq!(
        restarted.last_server_exit.as_deref(),
        Some("killed by signal 9 (SIGKILL)")
    );
    assert_ne!(
        restarted.server_started_at, status.server_started_at,
        "a new server"
    );
    let pg = connect(&cluster, &ip).await;
    let note: String = pg
        .query_one("select note from entries where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        note, "before the pod was deleted",
        "the row survives the crash"
    );

    // The pod is deleted: the StatefulSet recreates it on the same volume.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let old_uid = pods.get(POD).await.unwrap().uid();
    drop(pg);
    let deleted = Instant::now();
    pods.delete(POD, &DeleteParams::default()).await.unwrap();
    wait_for(&pods, POD, Duration::from_secs(120), |p| {
        (p.uid() != old_uid).then_some(Ok(()))
    })
    .await
    .unwrap_or_else(|e| panic!("the pod was not recreated: {e}"));
    let pod = cluster
        .pod_ready(NAMESPACE, POD, Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- operator:\n{}", operator.log_tail(30)));
    let ip = pod.status.unwrap().pod_ip.unwrap();
    let pg = connect(&cluster, &ip).await;
    eprintln!(
        "pod deleted → recreated and connectable: {:?}",
        deleted.elapsed()
    );
    let note: String = pg
        .query_one("select note from entries where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "before the pod was deleted");
    assert_ne!(
        postmaster_start(&pg).await,
        started,
        "a new server in the new pod"
    );
    // The new pod's agent converges the spec again, over the drifted value.
    observed_work_mem(
        &cluster,
        &mut operator,
        "32MB",
        Some(generation),
        Duration::from_secs(90),
    )
    .await;
}
