//! The minimal envtest harness (as in operator/tests/it/envtest.rs): the real
//! kube-apiserver + etcd built by `scripts/setup-kube.sh`, on loopback with a
//! fresh data dir, killed on drop; and the operator in-process.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

pub struct ApiServer {
    _dir: tempfile::TempDir,
    child: Child,
    pub client: Client,
}

fn binary() -> PathBuf {
    let tools = std::env::var_os("PGPLANE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/pgplane"));
    let bin = tools.join("bin/pgplane-kube-apiserver");
    assert!(
        bin.exists(),
        "{} is missing: run `bash scripts/setup-kube.sh` first",
        bin.display()
    );
    bin
}

impl ApiServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("apiserver.log")).unwrap();
        let mut child = Command::new(binary())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--kubeconfig")
            .arg(dir.path().join("kubeconfig"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting pgplane-kube-apiserver");
        let path = dir.path().join("kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(90);
        while !path.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.path().join("apiserver.log")).unwrap();
                panic!("kube-apiserver exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "kube-apiserver not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let kubeconfig = Kubeconfig::read_from(&path).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        Self {
            _dir: dir,
            child,
            client: Client::try_from(config).unwrap(),
        }
    }

    pub async fn install_crd(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd: CustomResourceDefinition = serde_yaml::from_str(&crd::crd_yaml()).unwrap();
        crds.patch(
            "postgresinstances.pgplane.io",
            &PatchParams::apply("envtest").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        eventually("CRD established", || async {
            let crd = crds.get("postgresinstances.pgplane.io").await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }

    pub async fn namespace(&self, name: &str) {
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, or panics after 60s naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the operator in-process, watching one namespace (all when
/// `None`), until `cancel`.
pub fn start_operator(client: &Client, namespace: Option<&str>, cancel: CancellationToken) {
    let settings = operator::Settings {
        namespace: namespace.map(str::to_owned),
        instance_image: "pgplane/instance:test".to_owned(),
    };
    tokio::spawn(operator::run_controller(
        client.clone(),
        settings,
        Arc::new(operator::admin::Metrics::default()),
        cancel,
    ));
}
