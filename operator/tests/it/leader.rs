//! Leader election on a real Lease: one replica leads, a standby takes over
//! when the leader releases the Lease or dies, and a leader that finds the
//! Lease taken stops its controller.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crd::ConditionType;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams};
use kube::Api;
use operator::admin::Metrics;
use operator::leader::LeaseSettings;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::envtest::{eventually, ApiServer};
use crate::lifecycle::{condition, create, setup, NS};

const LEASE: &str = "pgplane-operator";

struct Replica {
    identity: String,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), operator::leader::LostLease>>,
}

fn replica(server: &ApiServer, name: &str, lease_duration: Duration) -> Replica {
    let mut lease = LeaseSettings::new(NS, LEASE, name);
    lease.lease_duration = lease_duration;
    lease.renew_deadline = Duration::from_secs(2);
    lease.retry_period = Duration::from_millis(250);
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(operator::run_elected(
        server.client.clone(),
        operator::Settings {
            namespace: Some(NS.into()),
            instance_image: "pgplane/instance:test".into(),
            ..Default::default()
        },
        Some(lease),
        metrics.clone(),
        shutdown.clone(),
    ));
    Replica {
        identity: name.to_owned(),
        metrics,
        shutdown,
        task,
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_a_standby_takes_over_and_a_lost_lease_stops_the_leader() {
    let (server, api) = setup().await;
    let leases: Api<Lease> = Api::namespaced(server.client.clone(), NS);
    // A long lease: a takeover faster than this proves the Lease was
    // released, not waited out.
    let lease_duration = Duration::from_secs(30);
    let a = replica(&server, "a", lease_duration);
    let b = replica(&server, "b", lease_duration);

    let first = eventually("a leader", || async {
        let h = holder(&leases).await?;
        (a.metrics.is_leader() || b.metrics.is_leader()).then_some(h)
    })
    .await;
    let (leader, standby) = if first == "a" { (a, b) } else { (b, a) };
    assert_eq!(first, leader.identity);
    assert!(!standby.metrics.is_leader());

    create(&api, "one", json!({})).await;
    eventually("Progressing", || {
        condition(&api, "one", ConditionType::Progressing)
    })
    .await;
    assert!(leader.metrics.reconciles() > 0);
    assert_eq!(standby.metrics.reconciles(), 0, "the standby reconciled");

    // A clean shutdown releases the Lease: the standby leads at once.
    let stopped = Instant::now();
    leader.shutdown.cancel();
    leader
        .task
        .await
        .unwrap()
        .expect("a clean stop is not a lost lease");
    assert!(!leader.metrics.is_leader());
    eventually("the standby leads", || async {
        (holder(&leases).await? == standby.identity && standby.metrics.is_leader()).then_some(())
    })
    .await;
    assert!(
        stopped.elapsed() < lease_duration,
        "takeover took {:?}: the Lease was not released",
        stopped.elapsed()
    );
    create(&api, "two", json!({})).await;
    eventually("the new leader reconciles", || {
        condition(&api, "two", ConditionType::Progressing)
    })
    .await;

    // Someone else takes the Lease (a partitioned leader would see this
    // after the partition heals): the leader stops its controller.
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "holderIdentity": "intruder",
                "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
            }})),
        )
        .await
        .unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(30), standby.task)
        .await
        .expect("the leader noticed within 30 s")
        .unwrap()
        .expect_err("a taken Lease is lost");
    assert!(
        lost.to_string().contains("another replica holds the Lease"),
        "{lost}"
    );
    assert!(!standby.metrics.is_leader());
    assert_eq!(holder(&leases).await.as_deref(), Some("intruder"));
}

/// An operator process with short lease timings; its stderr goes to a file.
fn operator_process(server: &ApiServer, identity: &str, log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pgplane-operator"))
        .args(["--namespace", NS, "--identity", identity])
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--lease-duration-secs", "4", "--renew-deadline-secs", "3"])
        .args(["--retry-period-secs", "1"])
        .env("KUBECONFIG", server.kubeconfig())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("starting pgplane-operator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_process_is_replaced_when_its_lease_expires() {
    let (server, api) = setup().await;
    let leases: Api<Lease> = Api::namespaced(server.client.clone(), NS);
    let logs = tempfile::tempdir().unwrap();
    let a = operator_process(&server, "op-a", &logs.path().join("a.log"));
    let b = operator_process(&server, "op-b", &logs.path().join("b.log"));

    let first = eventually("a leader", || holder(&leases)).await;
    let (mut leader, mut standby, standby_name) = if first.starts_with("op-a_") {
        (a, b, "op-b_")
    } else {
        (b, a, "op-a_")
    };

    // SIGKILL: no release; the standby must wait for the Lease to expire.
    leader.kill().unwrap();
    leader.wait().unwrap();
    let next = eventually("the standby takes over", || async {
        holder(&leases).await.filter(|h| *h != first)
    })
    .await;
    assert!(next.starts_with(standby_name), "{next}");
    create(&api, "orders", json!({})).await;
    eventually("the new leader reconciles", || {
        condition(&api, "orders", ConditionType::Progressing)
    })
    .await;

    // SIGTERM: the leader stops cleanly and gives the Lease back.
    let pid = standby.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = standby.wait().unwrap();
    let log = std::fs::read_to_string(logs.path().join(if standby_name == "op-a_" {
        "a.log"
    } else {
        "b.log"
    }))
    .unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("released the leader Lease"), "{log}");
    assert_eq!(holder(&leases).await, None);
}
