//! The list against the real API server: create → children and
//! Progressing; the test plays the kubelet → Ready; reload-only vs restart
//! changes; operator restart changes nothing; delete cleans up; bad input.

use crd::{ConditionType, PostgresInstance};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::envtest::{self, eventually, ApiServer, RunningOperator};

pub(crate) const NS: &str = "shop";

pub(crate) async fn setup() -> (ApiServer, Api<PostgresInstance>) {
    let server = ApiServer::start().await;
    server.install_crd().await;
    server.namespace(NS).await;
    let api = Api::namespaced(server.client.clone(), NS);
    (server, api)
}

pub(crate) async fn create(api: &Api<PostgresInstance>, name: &str, spec: serde_json::Value) {
    try_create(api, name, spec).await.unwrap();
}

/// Creates a resource as a user would, returning the API server's answer.
async fn try_create(
    api: &Api<PostgresInstance>,
    name: &str,
    spec: serde_json::Value,
) -> kube::Result<PostgresInstance> {
    let pi: PostgresInstance = serde_json::from_value(json!({
        "apiVersion": "pgplane.io/v1", "kind": "PostgresInstance",
        "metadata": { "name": name }, "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &pi).await
}

pub(crate) async fn condition(
    api: &Api<PostgresInstance>,
    name: &str,
    c: ConditionType,
) -> Option<(bool, i64)> {
    let pi = api.get(name).await.ok()?;
    let gen = pi.metadata.generation?;
    let status = pi.status?;
    let cond = status.condition(c)?;
    (status.observed_generation == Some(gen) && cond.observed_generation == Some(gen))
        .then(|| (cond.status == crd::ConditionStatus::True, gen))
}

async fn mark_ready(server: &ApiServer, name: &str) {
    envtest::mark_ready(server, NS, name).await;
}

async fn patch_spec(api: &Api<PostgresInstance>, name: &str, spec: serde_json::Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": spec })),
    )
    .await
    .unwrap();
}

fn restart_hash(sts: &StatefulSet) -> String {
    sts.spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[operator::builders::RESTART_HASH_ANNOTATION]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_lifecycle_against_a_real_apiserver() {
    let (server, api) = setup().await;
    let op = RunningOperator::start(&server.client, NS);
    let sts_api: Api<StatefulSet> = Api::namespaced(server.client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(server.client.clone(), NS);

    // 1. create → children with the expected content, Progressing.
    create(
        &api,
        "orders",
        json!({ "extensions": [{"name": "hstore"}], "config": {"work_mem": "16MB"} }),
    )
    .await;
    eventually("Progressing=True", || {
        condition(&api, "orders", ConditionType::Progressing)
    })
    .await
    .0
    .then_some(())
    .expect("Progressing is True before the pods are ready");
    let pi = api.get("orders").await.unwrap();
    assert_eq!(pi.finalizers(), [operator::FINALIZER]);
    let sts = sts_api.get("orders").await.unwrap();
    let expected = operator::builders::statefulset(&pi, &op_settings());
    assert_eq!(
        sts.spec.template.spec.as_ref().unwrap().containers[0].image,
        expected.spec.template.spec.as_ref().unwrap().containers[0].image
    );
    assert_eq!(restart_hash(&sts), restart_hash(&expected));
    assert_eq!(sts.owner_references()[0].name, "orders");
    assert_eq!(
        sts.spec.volume_claim_templates.as_ref().unwrap()[0]
            .metadata
            .owner_references,
        None
    );
    Api::<Service>::namespaced(server.client.clone(), NS)
        .get("orders")
        .await
        .unwrap();
    let cm = Api::<ConfigMap>::namespaced(server.client.clone(), NS)
        .get("orders-config")
        .await
        .unwrap();
    assert!(cm.data.unwrap()["spec.json"].contains("\"work_mem\": \"16MB\""));
    let password = secret_password(&secrets).await;
    assert_eq!(password.len(), 32);
    let status = api.get("orders").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(crd::Phase::Provisioning));
    let conn = status.connection.unwrap();
    assert_eq!(
        (conn.host.as_str(), conn.port, conn.secret_name.as_str()),
        ("orders.shop.svc", 5432, "orders-credentials")
    );

    // 2. the pods become ready → Ready, observedGeneration current.
    mark_ready(&server, "orders").await;
    eventually("Ready=True", || async {
        condition(&api, "orders", ConditionType::Ready)
            .await
            .filter(|c| c.0)
    })
    .await;
    assert_eq!(
        api.get("orders").await.unwrap().status.unwrap().phase,
        Some(crd::Phase::Running)
    );

    // 3a. reload-only change: new generation observed, pod template untouched.
    let template_before = sts_api.get("orders").await.unwrap();
    patch_spec(&api, "orders", json!({ "config": {"work_mem": "64MB"} })).await;
    eventually("generation 2 observed", || async {
        condition(&api, "orders", ConditionType::Ready)
            .await
            .filter(|c| c.1 == 2 && c.0)
    })
    .await;
    let template_after = sts_api.get("orders").await.unwrap();
    assert_eq!(
        template_after.metadata.generation, template_before.metadata.generation,
        "no rollout for a reload-only change"
    );
    assert!(
        !condition(&api, "orders", ConditionType::PendingRestart)
            .await
            .unwrap()
            .0
    );

    // 3b. shared_preload_libraries → PendingRestart, then a rolling restart.
    patch_spec(
        &api,
        "orders",
        json!({ "config": {"work_mem": "64MB", "shared_preload_libraries": "auto_explain"} }),
    )
    .await;
    eventually("PendingRestart=True", || async {
        condition(&api, "orders", ConditionType::PendingRestart)
            .await
            .filter(|c| c.0 && c.1 == 3)
    })
    .await;
    let restarted = sts_api.get("orders").await.unwrap();
    assert_ne!(
        restart_hash(&restarted),
        restart_hash(&template_before),
        "restart annotation changed"
    );
    assert!(restarted.metadata.generation > template_before.metadata.generation);
    mark_ready(&server, "orders").await;
    eventually("PendingRestart=False after the rollout", || async {
        condition(&api, "orders", ConditionType::PendingRestart)
            .await
            .filter(|c| !c.0)
    })
    .await;
    eventually("Ready again", || async {
        condition(&api, "orders", ConditionType::Ready)
            .await
            .filter(|c| c.0)
    })
    .await;

    // 4. restarting the operator changes nothing.
    op.stop().await;
    let before = sts_api
        .get("orders")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let op = RunningOperator::start(&server.client, NS);
    eventually("a reconcile after the restart", || async {
        (op.metrics.render().contains("reconciles_total 0"))
            .then_some(())
            .xor(Some(()))
    })
    .await;
    let pi_rv = api.get("orders").await.unwrap().metadata.resource_version;
    assert_eq!(
        sts_api
            .get("orders")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before,
        "operator restart rolled the StatefulSet"
    );
    assert_eq!(
        secret_password(&secrets).await,
        password,
        "password never rotated"
    );
    assert_eq!(
        api.get("orders").await.unwrap().metadata.resource_version,
        pi_rv
    );

    // 5. delete → children deleted, finalizer removed (the object is gone).
    api.delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    eventually("instance gone", || async {
        api.get_opt("orders").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(sts_api.get_opt("orders").await.unwrap().is_none());
    assert!(secrets
        .get_opt("orders-credentials")
        .await
        .unwrap()
        .is_none());
    assert!(Api::<Service>::namespaced(server.client.clone(), NS)
        .get_opt("orders")
        .await
        .unwrap()
        .is_none());
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_deleted_secret() {
    let (server, api) = setup().await;

    // A CR that fails the CRD schema is rejected with a clear message.
    let bad = json!({ "replicas": 3, "postgresVersion": "9", "storage": "lots" });
    let err = try_create(&api, "bad", bad).await.unwrap_err().to_string();
    for needle in [
        "spec.replicas",
        "spec.postgresVersion",
        "supported values: \"15\"",
        "spec.storage",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }

    // A name whose StatefulSet could not run (its revision label would
    // exceed 63 characters) is refused at admission, not left half-built.
    let long = "a".repeat(crd::MAX_NAME_LEN + 1);
    let err = try_create(&api, &long, json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metadata.name must be at most 52 characters"),
        "{err}"
    );
    create(&api, &"a".repeat(crd::MAX_NAME_LEN), json!({})).await;

    let op = RunningOperator::start(&server.client, NS);
    let secrets: Api<Secret> = Api::namespaced(server.client.clone(), NS);
    create(&api, "orders", json!({})).await;
    eventually("Progressing", || {
        condition(&api, "orders", ConditionType::Progressing)
    })
    .await;
    let first = secret_password(&secrets).await;
    let sts_api: Api<StatefulSet> = Api::namespaced(server.client.clone(), NS);
    let template = sts_api.get("orders").await.unwrap().spec.template;

    // A Secret deleted behind the operator's back is recreated; the old
    // password is not kept anywhere, so the new one is different. The pod
    // mounts the Secret (not an env var), so its agent applies the new
    // password to the running server (e2e `agent` test) and the Secret
    // stays the truth; the pod template does not change (no restart).
    secrets
        .delete("orders-credentials", &DeleteParams::default())
        .await
        .unwrap();
    let second = eventually("Secret recreated", || async {
        let s = secrets.get_opt("orders-credentials").await.ok()??;
        Some(password_of(&s))
    })
    .await;
    assert_ne!(first, second);
    let after = sts_api.get("orders").await.unwrap().spec.template;
    assert_eq!(template, after, "recreating the Secret rolls nothing");

    op.stop().await;
}

fn op_settings() -> operator::Settings {
    operator::Settings {
        namespace: Some(NS.into()),
        instance_image: "pgplane/instance:test".into(),
        ..Default::default()
    }
}

async fn secret_password(secrets: &Api<Secret>) -> String {
    password_of(&secrets.get("orders-credentials").await.unwrap())
}

fn password_of(s: &Secret) -> String {
    String::from_utf8(s.data.as_ref().unwrap()["password"].0.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_recovers_from_an_apiserver_restart_mid_reconcile() {
    let (mut server, api) = setup().await;
    let op = RunningOperator::start(&server.client, NS);
    create(&api, "before", json!({})).await;
    eventually("Progressing before the restart", || {
        condition(&api, "before", ConditionType::Progressing)
    })
    .await;

    // Several creates land, and the API server is killed while the operator
    // is reconciling them.
    for i in 0..5 {
        create(&api, &format!("burst-{i}"), json!({})).await;
    }
    server.restart().await;
    let api: Api<PostgresInstance> = Api::namespaced(server.client.clone(), NS);
    create(&api, "after", json!({})).await;

    let sts_api: Api<StatefulSet> = Api::namespaced(server.client.clone(), NS);
    for name in [
        "burst-0", "burst-1", "burst-2", "burst-3", "burst-4", "after",
    ] {
        eventually(&format!("{name} reconciled after the restart"), || async {
            sts_api.get_opt(name).await.ok()??;
            condition(&api, name, ConditionType::Progressing).await
        })
        .await;
    }
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_a_cluster_ip_is_replaced_by_a_headless_one() {
    let (server, api) = setup().await;
    // What an older operator left behind: a ClusterIP Service.
    let services: Api<Service> = Api::namespaced(server.client.clone(), NS);
    let old: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "orders", "labels": { "app.kubernetes.io/managed-by": "pgplane-operator" } },
        "spec": { "ports": [{ "name": "postgres", "port": 5432 }] },
    }))
    .unwrap();
    services
        .patch(
            "orders",
            &PatchParams::apply(operator::FIELD_MANAGER),
            &Patch::Apply(&old),
        )
        .await
        .unwrap();
    assert_ne!(
        services
            .get("orders")
            .await
            .unwrap()
            .spec
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some("None")
    );

    let op = RunningOperator::start(&server.client, NS);
    create(&api, "orders", json!({})).await;
    eventually("Progressing", || {
        condition(&api, "orders", ConditionType::Progressing)
    })
    .await;
    let svc = services.get("orders").await.unwrap();
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    assert!(op.metrics.reconciles() > 0);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roles_secret_follows_the_declared_roles() {
    let (server, api) = setup().await;
    let op = RunningOperator::start(&server.client, NS);
    let secrets: Api<Secret> = Api::namespaced(server.client.clone(), NS);
    let sts_api: Api<StatefulSet> = Api::namespaced(server.client.clone(), NS);
    let keys_are = |want: &'static [&'static str]| {
        let secrets = secrets.clone();
        move || {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get_opt("orders-roles").await.ok()??;
                let data = s.data.unwrap_or_default();
                let passwords: std::collections::BTreeMap<String, String> = data
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
                    .collect();
                (passwords.keys().map(String::as_str).collect::<Vec<_>>() == want)
                    .then_some(passwords)
            }
        }
    };

    create(
        &api,
        "orders",
        json!({ "roles": [{ "name": "app" }], "databases": [{ "name": "shop", "owner": "app" }] }),
    )
    .await;
    let first = eventually("the roles' Secret with app", keys_are(&["app"])).await;
    assert_eq!(first["app"].len(), 32);
    let secret = secrets.get("orders-roles").await.unwrap();
    assert_eq!(secret.owner_references()[0].name, "orders");
    let template = eventually("the StatefulSet", || async {
        Some(sts_api.get_opt("orders").await.ok()??.spec.template)
    })
    .await;

    // Added later: a new key, the stored one untouched, the pod template
    // unchanged (no restart).
    patch_spec(
        &api,
        "orders",
        json!({ "roles": [{ "name": "app" }, { "name": "reporting" }] }),
    )
    .await;
    let second = eventually("reporting added", keys_are(&["app", "reporting"])).await;
    assert_eq!(second["app"], first["app"]);
    assert_ne!(second["reporting"], second["app"]);

    // A key deleted behind the operator's back gets a new password.
    secrets
        .patch(
            "orders-roles",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "reporting": null } })),
        )
        .await
        .unwrap();
    let healed = eventually("reporting regenerated", || async {
        let passwords = keys_are(&["app", "reporting"])().await?;
        (passwords["reporting"] != second["reporting"]).then_some(passwords)
    })
    .await;
    assert_eq!(healed["app"], first["app"]);

    // Declared absent: the key goes.
    patch_spec(
        &api,
        "orders",
        json!({ "roles": [{ "name": "app" }, { "name": "reporting", "ensure": "absent" }] }),
    )
    .await;
    let third = eventually("reporting removed", keys_are(&["app"])).await;
    assert_eq!(third["app"], first["app"]);
    assert_eq!(
        sts_api.get("orders").await.unwrap().spec.template,
        template,
        "role changes roll nothing"
    );

    // Deleted with the instance.
    api.delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the roles' Secret deleted", || async {
        secrets
            .get_opt("orders-roles")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    op.stop().await;
}
