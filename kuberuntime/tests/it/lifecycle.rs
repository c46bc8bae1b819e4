//! Create → the resource exists with the spec; the test plays the kubelet →
//! the control plane shows `Up`; update → patched; delete → gone, `Deleted`.

use std::sync::Arc;
use std::time::Duration;

use api::CreateInstance;
use crd::PostgresInstance;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use kuberuntime::{KubernetesRuntime, GENERATION_ANNOTATION, INSTANCE_ID_LABEL};
use reconciler::auth::Caller;
use reconciler::commands::{self, Command};
use reconciler::AppState;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envtest::{eventually, start_operator, ApiServer};

const NS: &str = "shop";

async fn control_plane(pool: PgPool) -> (AppState, Caller) {
    reconciler::prepare_database(&pool, "local").await.unwrap();
    let state = AppState::new(pool, "local").await;
    sqlx::query("insert into orgs (name) values ('acme')")
        .execute(&state.pool)
        .await
        .unwrap();
    (state, Caller::token("acme", Uuid::nil(), true))
}

async fn instance(state: &AppState, name: &str) -> api::Instance {
    let mut conn = state.pool.acquire().await.unwrap();
    reconciler::store::find_instance(&mut conn, "acme", name, false)
        .await
        .unwrap()
        .into_api()
}

/// Plays the kubelet: every pod of the StatefulSet ready on its template.
async fn mark_ready(server: &ApiServer, name: &str) {
    let sts_api: Api<StatefulSet> = Api::namespaced(server.client.clone(), NS);
    let sts = eventually("StatefulSet", || async { sts_api.get(name).await.ok() }).await;
    let gen = sts.metadata.generation.unwrap();
    let rev = format!("{name}-{gen}");
    sts_api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": {
                "observedGeneration": gen, "replicas": 1, "readyReplicas": 1,
                "availableReplicas": 1, "updatedReplicas": 1, "currentReplicas": 1,
                "currentRevision": rev, "updateRevision": rev,
            }})),
        )
        .await
        .unwrap();
}

#[sqlx::test(migrations = false)]
async fn queued_events_become_postgres_instances_and_the_control_plane_shows_up(pool: PgPool) {
    let server = ApiServer::start().await;
    server.install_crd().await;
    server.namespace(NS).await;
    let cancel = CancellationToken::new();
    start_operator(&server.client, NS, cancel.clone());
    let (state, caller) = control_plane(pool).await;
    let runtime = Arc::new(KubernetesRuntime::new(server.client.clone(), NS));
    tokio::spawn(reconciler::status::run(state.clone(), cancel.clone()));
    let mut settings = conductor::Settings::new("local");
    settings.resync_every = Duration::from_millis(500);
    tokio::spawn(conductor::run(
        state.queues.clone(),
        runtime.clone(),
        settings,
        cancel.clone(),
    ));
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
    assert_eq!(up.observed.as_ref().unwrap().config["work_mem"], "16MB");
    let conn = up.connection.clone().unwrap();
    assert_eq!((conn.host.as_str(), conn.port), ("orders.shop.svc", 5432));
    let secret = Api::<Secret>::namespaced(server.client.clone(), NS)
        .get("orders-credentials")
        .await
        .unwrap();
    let password = String::from_utf8(secret.data.unwrap()["password"].0.clone()).unwrap();
    assert_eq!(
        state.queues.get_secret(up.id).await.unwrap(),
        Some(password),
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
            spec,
            expected_generation: None,
        },
    )
    .await
    .unwrap();
    let updated = eventually("generation 2 Up", || async {
        let i = instance(&state, "orders").await;
        (i.state == domain::State::Up && i.observed_generation == 2).then_some(i)
    })
    .await;
    assert_eq!(updated.observed.unwrap().config["work_mem"], "32MB");
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
