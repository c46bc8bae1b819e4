//! pgplane's operator on the cluster, as examples/kubernetes sets it up: the
//! committed CRD and rbac.yaml applied as they are, and `pgplane-operator`
//! running as a process with the permissions rbac.yaml grants its service
//! account and the settings deploy.yaml gives it. (deploy.yaml's Deployments
//! need images of their own and an in-cluster route to the API server
//! (kube-proxy), which this node does not have.)

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, PostParams};
use kube::{Api, ResourceExt};

use crate::{apply_file, parse_file, repo_root, wait_for, workspace_bin, Cluster, Proc};

/// Applies the CRD (waiting until it is established) and rbac.yaml, and
/// starts the operator with deploy.yaml's environment plus `env` (which
/// wins). Its log is `operator.log` in the cluster's directory.
pub async fn run_operator(cluster: &Cluster, env: &[(&str, &str)]) -> Proc {
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
    let deploy = parse_file(&root.join("examples/kubernetes/deploy.yaml"));

    let kubeconfig =
        service_account_kubeconfig(cluster, "pgplane-system", "pgplane-operator").await;
    let mut operator = Command::new(workspace_bin("pgplane-operator"));
    operator
        .env("KUBECONFIG", &kubeconfig)
        .env(
            "PGPLANE_ADMIN_ADDR",
            format!("127.0.0.1:{}", crate::free_port()),
        )
        .env("POD_NAMESPACE", "pgplane-system")
        .env("POD_NAME", "pgplane-operator-test")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    for (name, value) in operator_env(&deploy) {
        operator.env(name, value);
    }
    for (name, value) in env {
        operator.env(name, value);
    }
    Proc::spawn(
        "pgplane-operator",
        &mut operator,
        cluster.dir().join("operator.log"),
    )
}

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
pub async fn service_account_kubeconfig(
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
