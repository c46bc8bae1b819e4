//! The envtest harness: starts the real kube-apiserver + etcd built by
//! `scripts/setup-kube.sh` on loopback with a fresh data dir, gives a kube
//! client, restarts it on demand and kills it on drop.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crd::PostgresInstance;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, CustomResourceExt};
use tokio_util::sync::CancellationToken;

pub struct ApiServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    pub client: Client,
}

fn binary() -> PathBuf {
    let tools = std::env::var_os("PGPLANE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/pgplane"));
    let bin = tools.join("bin/pgplane-kube-apiserver");
    assert!(
        bin.exists(),
        "{} is missing: run `bash scripts/setup-kube.sh` first (builds the envtest kube-apiserver from Go modules, ~13 min cold)",
        bin.display()
    );
    bin
}

impl ApiServer {
    /// Starts on free ports. A port picked free can be taken by another
    /// process before the API server or its etcd binds it; that start is
    /// retried on new ports (every other failure is one).
    pub async fn start() -> Self {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = spawn(&dir, port);
            match try_wait_ready(&dir, &mut Some(child)).await {
                Ok((client, child)) => {
                    return Self {
                        dir,
                        port,
                        child,
                        client,
                    }
                }
                Err(log) if attempts < 3 && log.contains("address already in use") => {
                    eprintln!("kube-apiserver lost a port race; starting again on new ports");
                }
                Err(log) => panic!("kube-apiserver exited:\n{log}"),
            }
        }
    }

    /// The admin kubeconfig the API server wrote (for operator processes).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The API server's process id (for the benchmark's CPU figures).
    #[allow(dead_code)] // used by operator/examples/bench_reconcile.rs only
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the API server (and its etcd) and starts it again on the same
    /// port and data: what an apiserver restart looks like to clients.
    pub async fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.dir.path().join("kubeconfig"));
        let child = spawn(&self.dir, self.port);
        let (client, child) = wait_ready(&self.dir, &mut Some(child)).await;
        self.client = client;
        self.child = child;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Installs the committed CRD and waits until it is established.
    pub async fn install_crd(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&crd::crd_yaml()).expect("the committed CRD parses");
        assert_eq!(crd, PostgresInstance::crd());
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
        self.kill();
    }
}

fn spawn(dir: &tempfile::TempDir, port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("apiserver.log"))
        .unwrap();
    Command::new(binary())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--kubeconfig")
        .arg(dir.path().join("kubeconfig"))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting pgplane-kube-apiserver")
}

async fn wait_ready(dir: &tempfile::TempDir, child: &mut Option<Child>) -> (Client, Option<Child>) {
    match try_wait_ready(dir, child).await {
        Ok(ready) => ready,
        Err(log) => panic!("kube-apiserver exited:\n{log}"),
    }
}

/// The client once the API server wrote its kubeconfig, or the tail of its
/// log when it exited first.
async fn try_wait_ready(
    dir: &tempfile::TempDir,
    child: &mut Option<Child>,
) -> Result<(Client, Option<Child>), String> {
    let path = dir.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !path.exists() {
        if let Some(status) = child.as_mut().unwrap().try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("apiserver.log")).unwrap_or_default();
            return Err(format!("({status})\n{}", tail(&log)));
        }
        assert!(
            Instant::now() < deadline,
            "kube-apiserver not ready after 90s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Ok((Client::try_from(config).unwrap(), child.take()))
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Plays the kubelet and the StatefulSet controller (neither runs here):
/// all pods of the StatefulSet ready on its current template. Waits for the
/// StatefulSet to exist.
#[allow(dead_code)] // not every test binary including this harness uses it
pub async fn mark_ready(server: &ApiServer, namespace: &str, name: &str) {
    let sts_api: Api<StatefulSet> = Api::namespaced(server.client.clone(), namespace);
    let sts = eventually(&format!("StatefulSet {namespace}/{name}"), || async {
        sts_api.get_opt(name).await.ok()?
    })
    .await;
    let gen = sts.metadata.generation.unwrap();
    let replicas = sts.spec.replicas.unwrap_or(1);
    let rev = format!("{name}-{gen}");
    sts_api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": {
                "observedGeneration": gen, "replicas": replicas, "readyReplicas": replicas,
                "availableReplicas": replicas, "updatedReplicas": replicas, "currentReplicas": replicas,
                "currentRevision": rev, "updateRevision": rev,
            }})),
        )
        .await
        .unwrap();
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator, in-process, watching one namespace.
pub struct RunningOperator {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    pub metrics: Arc<operator::admin::Metrics>,
}

impl RunningOperator {
    /// The operator watching `namespace`.
    pub fn start(client: &Client, namespace: &str) -> Self {
        Self::watching(client, Some(namespace))
    }

    /// The operator watching every namespace.
    #[allow(dead_code)] // not every test binary including this harness uses it
    pub fn start_all(client: &Client) -> Self {
        Self::watching(client, None)
    }

    fn watching(client: &Client, namespace: Option<&str>) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "off".into()),
            )
            .with_test_writer()
            .try_init();
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(operator::admin::Metrics::default());
        let settings = operator::Settings {
            namespace: namespace.map(str::to_owned),
            instance_image: "pgplane/instance:test".to_owned(),
            ..Default::default()
        };
        let task = tokio::spawn(operator::run_controller(
            client.clone(),
            settings,
            metrics.clone(),
            shutdown.clone(),
        ));
        Self {
            shutdown,
            task,
            metrics,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}
