//! Create → the resource exists with the spec; the test plays the kubelet →
//! the control plane shows `Up`; update → patched; delete → gone, `Deleted`.

use std::sync::Arc;
use std::time::Duration;

use api::CreateInstance;
use crd::PostgresInstance;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use kuberuntime::{KubernetesRuntime, Placement, GENERATION_ANNOTATION, INSTANCE_ID_LABEL};
use reconciler::auth::Caller;
use reconciler::commands::{self, Command};
use reconciler::AppState;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envtest::{self, eventually, ApiServer, RunningOperator};

const NS: &str = "shop";

async fn control_plane(pool: PgPool) -> (AppState, Caller) {
    reconciler::prepare_database(&pool, "local").await.unwrap();
    let state = AppState::new(pool, "local").await;
    state.publish_keys().await.unwrap();
    sqlx::query("insert into orgs (name) values ('acme')")
        .execute(&state.pool)
        .await
        .unwrap();
    (state, Caller::token("acme", Uuid::nil(), true))
}

async fn instance(state: &AppState, name: &str) -> api::Instance {
    instance_of(state, "acme", name).await
}

async fn instance_of(state: &AppState, org: &str, name: &str) -> api::Instance {
    let mut conn = state.pool.acquire().await.unwrap();
    reconciler::store::find_instance(&mut conn, org, name, false)
        .await
        .unwrap()
        .into_api()
}

async fn mark_ready(server: &ApiServer, name: &str) {
    envtest::mark_ready(server, NS, name).await;
}

/// The whole stack: API server with the CRD, the operator, the control
/// plane's status consumer and a conductor with the Kubernetes runtime
/// (`tune` adjusts the runtime and the conductor's settings).
async fn stack(
    pool: PgPool,
    tune: impl FnOnce(&mut KubernetesRuntime, &mut conductor::Settings),
) -> (
    ApiServer,
    AppState,
    Caller,
    Arc<KubernetesRuntime>,
    CancellationToken,
) {
    let server = ApiServer::start().await;
    server.install_crd().await;
    server.namespace(NS).await;
    let cancel = CancellationToken::new();
    RunningOperator::start(&server.client, NS);
    let (state, caller) = control_plane(pool).await;
    let mut runtime = KubernetesRuntime::new(server.client.clone(), NS);
    let mut settings = conductor::Settings::new("local");
    tune(&mut runtime, &mut settings);
    let runtime = Arc::new(runtime);
    tokio::spawn(reconciler::status::run(state.clone(), cancel.clone()));
    tokio::spawn(conductor::run(
        state.queues.clone(),
        runtime.clone(),
        settings,
        cancel.clone(),
    ));
    (server, state, caller, runtime, cancel)
}

#[sqlx::test(migrations = false)]
async fn queued_events_become_postgres_instances_and_the_control_plane_shows_up(pool: PgPool) {
    let (server, state, caller, runtime, cancel) = stack(pool, |_, settings| {
        settings.resync_every = Duration::from_millis(500);
    })
    .await;
    let pis: Api<PostgresInstance> = Api::namespaced(server.client.clone(), NS);

    // Create → the resource, with the spec, the instance id and generation 1.
    let mut spec = domain::InstanceSpec::default();
    spec.config.insert("work_mem".into(), "16MB".into());
    let created = commands::create(
        &state,
        &caller,
        CreateInstance {
            name: "orders".into(),
            spec,
            data_plane: None,
            owner: None,
        },
    )
    .await
    .unwrap();
    let pi = eventually("PostgresInstance created", || async {
        pis.get_opt("orders").await.unwrap()
    })
    .await;
    assert_eq!(pi.spec.config["work_mem"], "16MB");
    assert_eq!(pi.labels()[INSTANCE_ID_LABEL], created.id.to_string());
    assert_eq!(pi.annotations()[GENERATION_ANNOTATION], "1");
    assert_ne!(
        instance(&state, "orders").await.state,
        domain::State::Up,
        "not Up before the operator reports Ready"
    );

    // The pods become ready → the operator says Ready → the control plane Up.
    mark_ready(&server, "orders").await;
    let up = eventually("Up", || async {
        let i = instance(&state, "orders").await;
        (i.state == domain::State::Up).then_some(i)
    })
    .await;
    assert_eq!(up.observed_generation, 1);
    assert_eq!(
        up.observed, None,
        "no agent answers here, so nothing is observed: the desired spec is not reported as running"
    );

    // What the operator writes from the agent's answer reaches the control
    // plane with the conductor's next resync.
    let running = crd::ObservedSpecStatus {
        postgres_version: "15".into(),
        config: [("work_mem".to_owned(), "16MB".to_owned())].into(),
        running: true,
        ..Default::default()
    };
    pis.patch_status(
        "orders",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "status": { "observedSpec": running } })),
    )
    .await
    .unwrap();
    let up = eventually("the observed spec from the status", || async {
        let i = instance(&state, "orders").await;
        i.observed.is_some().then_some(i)
    })
    .await;
    assert_eq!(up.observed.as_ref().unwrap().config["work_mem"], "16MB");
    let conn = up.connection.clone().unwrap();
    assert_eq!((conn.host.as_str(), conn.port), ("orders.shop.svc", 5432));
    let secret = Api::<Secret>::namespaced(server.client.clone(), NS)
        .get("orders-credentials")
        .await
        .unwrap();
    let password = String::from_utf8(secret.data.unwrap()["password"].0.clone()).unwrap();
    let stored = state.queues.get_secret(up.id).await.unwrap().unwrap();
    assert!(queue::sealed::is_sealed(&stored), "sealed at rest");
    assert_eq!(
        state.keyring.open(&stored).unwrap(),
        password,
        "the operator's password went to the secret store"
    );

    // Update (reload-only) → the resource is patched, Up at generation 2.
    let mut spec = up.spec.clone();
    spec.config.insert("work_mem".into(), "32MB".into());
    commands::execute(
        &state,
        &caller,
        "orders",
        Command::Update {
            spec: Box::new(spec),
            expected_generation: None,
            owner: None,
        },
    )
    .await
    .unwrap();
    let updated = eventually("generation 2 Up", || async {
        let i = instance(&state, "orders").await;
        (i.state == domain::State::Up && i.observed_generation == 2).then_some(i)
    })
    .await;
    assert_eq!(
        updated.observed.unwrap().config["work_mem"],
        "16MB",
        "what the status last observed, not the desired 32MB"
    );
    let pi = pis.get("orders").await.unwrap();
    assert_eq!(pi.spec.config["work_mem"], "32MB");
    assert_eq!(pi.annotations()[GENERATION_ANNOTATION], "2");

    // Re-applying the same generation changes nothing (idempotent).
    let before = pi.resource_version();
    let again = domain::DataPlaneEvent {
        event_id: Uuid::new_v4(),
        instance_id: up.id,
        org: "acme".into(),
        name: "orders".into(),
        generation: 2,
        kind: domain::EventKind::Update,
        spec: updated.spec.clone(),
        restart_predicted: false,
        restore_from: None,
        switchover_to: None,
    };
    let applied = conductor::Runtime::apply(runtime.as_ref(), &again)
        .await
        .unwrap();
    assert_eq!(applied.report, domain::ReportKind::Updated);
    assert_eq!(pis.get("orders").await.unwrap().resource_version(), before);

    // Delete → the resource is gone (finalizer done), the instance Deleted.
    commands::execute(&state, &caller, "orders", Command::Delete)
        .await
        .unwrap();
    eventually("Deleted", || async {
        (instance(&state, "orders").await.state == domain::State::Deleted).then_some(())
    })
    .await;
    assert!(pis.get_opt("orders").await.unwrap().is_none());
    assert!(
        Api::<StatefulSet>::namespaced(server.client.clone(), NS)
            .get_opt("orders")
            .await
            .unwrap()
            .is_none(),
        "children cleaned up"
    );
    cancel.cancel();
}

/// Pods not ready within the runtime's wait: the event is redelivered and
/// waited for again (no `Error`), and becomes `Up` once the pods are ready.
/// A restart sets `restartRequest`, which the operator rolls out.
#[sqlx::test(migrations = false)]
async fn a_slow_rollout_is_waited_for_across_redeliveries_and_restart_rolls_the_pod(pool: PgPool) {
    let (server, state, caller, _, cancel) = stack(pool, |runtime, settings| {
        runtime.ready_timeout = Duration::from_millis(500);
        settings.visibility_timeout = Duration::from_secs(1);
        settings.max_deliveries = 1000;
    })
    .await;
    let pis: Api<PostgresInstance> = Api::namespaced(server.client.clone(), NS);

    let created = commands::create(
        &state,
        &caller,
        CreateInstance {
            name: "orders".into(),
            spec: domain::InstanceSpec::default(),
            data_plane: None,
            owner: None,
        },
    )
    .await
    .unwrap();
    eventually("PostgresInstance created", || async {
        pis.get_opt("orders").await.unwrap()
    })
    .await;
    // Several waits time out while nobody plays the kubelet: the create
    // event is delivered again and again.
    eventually("the create redelivered three times", || async {
        let deliveries: Option<i32> =
            sqlx::query_scalar("select max(read_ct) from pgmq.q_dp_local")
                .fetch_one(&state.pool)
                .await
                .unwrap();
        (deliveries.unwrap_or(0) >= 3).then_some(())
    })
    .await;
    let waiting = instance(&state, "orders").await;
    assert_eq!(waiting.state, domain::State::Submitted, "{waiting:?}");
    mark_ready(&server, "orders").await;
    eventually("Up", || async {
        (instance(&state, "orders").await.state == domain::State::Up).then_some(())
    })
    .await;
    let mut conn = state.pool.acquire().await.unwrap();
    let history = reconciler::store::history(&mut conn, created.id)
        .await
        .unwrap();
    assert!(
        history.iter().all(|h| h.to != domain::State::Error),
        "never Error while waiting: {history:?}"
    );

    // Restart → a restart request on the resource → a new pod template.
    let sts_api: Api<StatefulSet> = Api::namespaced(server.client.clone(), NS);
    let hash = |sts: &StatefulSet| {
        sts.spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["pgplane.io/restart-hash"]
            .clone()
    };
    let before = hash(&sts_api.get("orders").await.unwrap());
    commands::execute(&state, &caller, "orders", Command::Restart)
        .await
        .unwrap();
    let pi = eventually("restart requested", || async {
        let pi = pis.get("orders").await.unwrap();
        pi.spec.restart_request.is_some().then_some(pi)
    })
    .await;
    assert_eq!(pi.spec.restart_request.as_deref(), Some("generation-2"));
    eventually("pod template rolled", || async {
        let sts = sts_api.get("orders").await.ok()?;
        (hash(&sts) != before).then_some(())
    })
    .await;
    mark_ready(&server, "orders").await;
    eventually("Up after the restart", || async {
        let i = instance(&state, "orders").await;
        (i.state == domain::State::Up && i.observed_generation == 2).then_some(())
    })
    .await;
    cancel.cancel();
}

/// One namespace per organisation: two organisations' instances of the same
/// name run side by side, each in its own namespace; deleting one leaves
/// the other.
#[sqlx::test(migrations = false)]
async fn each_organisation_gets_its_own_namespace(pool: PgPool) {
    let server = ApiServer::start().await;
    server.install_crd().await;
    let cancel = CancellationToken::new();
    RunningOperator::start_all(&server.client);
    let (state, acme) = control_plane(pool).await;
    sqlx::query("insert into orgs (name) values ('Globex Corp')")
        .execute(&state.pool)
        .await
        .unwrap();
    let globex = Caller::token("Globex Corp", Uuid::nil(), true);
    let runtime = KubernetesRuntime::with_placement(
        server.client.clone(),
        Placement::PerOrg {
            prefix: "pgplane".into(),
        },
    );
    let (acme_ns, globex_ns) = (
        runtime.namespace_of("acme"),
        runtime.namespace_of("Globex Corp"),
    );
    assert_eq!(acme_ns, "pgplane-acme");
    tokio::spawn(reconciler::status::run(state.clone(), cancel.clone()));
    tokio::spawn(conductor::run(
        state.queues.clone(),
        Arc::new(runtime),
        conductor::Settings::new("local"),
        cancel.clone(),
    ));

    for caller in [&acme, &globex] {
        commands::create(
            &state,
            caller,
            CreateInstance {
                name: "orders".into(),
                spec: domain::InstanceSpec::default(),
                data_plane: None,
                owner: None,
            },
        )
        .await
        .unwrap();
    }
    for (org, ns) in [("acme", &acme_ns), ("Globex Corp", &globex_ns)] {
        let pis: Api<PostgresInstance> = Api::namespaced(server.client.clone(), ns);
        eventually(&format!("orders in {ns}"), || async {
            pis.get_opt("orders").await.ok()?
        })
        .await;
        envtest::mark_ready(&server, ns, "orders").await;
        let up = eventually(&format!("{org}'s orders Up"), || async {
            let i = instance_of(&state, org, "orders").await;
            (i.state == domain::State::Up).then_some(i)
        })
        .await;
        assert_eq!(up.connection.unwrap().host, format!("orders.{ns}.svc"));
    }
    let namespace = Api::<k8s_openapi::api::core::v1::Namespace>::all(server.client.clone())
        .get(&globex_ns)
        .await
        .unwrap();
    assert_eq!(namespace.labels()["pgplane.io/org"], "Globex-Corp");

    commands::execute(&state, &acme, "orders", Command::Delete)
        .await
        .unwrap();
    eventually("acme's orders Deleted", || async {
        (instance_of(&state, "acme", "orders").await.state == domain::State::Deleted).then_some(())
    })
    .await;
    let acme_pis: Api<PostgresInstance> = Api::namespaced(server.client.clone(), &acme_ns);
    assert!(acme_pis.get_opt("orders").await.unwrap().is_none());
    let globex_pis: Api<PostgresInstance> = Api::namespaced(server.client.clone(), &globex_ns);
    assert!(globex_pis.get_opt("orders").await.unwrap().is_some());
    assert_eq!(
        instance_of(&state, "Globex Corp", "orders").await.state,
        domain::State::Up
    );
    cancel.cancel();
}
