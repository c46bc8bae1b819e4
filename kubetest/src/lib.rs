//! A real single-node Kubernetes cluster for tests: etcd + kube-apiserver,
//! kube-controller-manager, kube-scheduler and kubelet (all modes of the
//! `pgplane-kube` binary `scripts/setup-kube.sh` builds), the Debian
//! containerd + runc, and a CNI bridge — with pgplane's images
//! (`scripts/build-images.sh`) imported into the node.
//!
//! Everything lives in one directory per cluster, `/tmp/pgk<N>` (short: it
//! holds unix sockets), and `N` also names the node, the bridge `pgk<N>`
//! (pod subnet `10.244.<N>.0/24`, reachable from the host) and the kubelet's
//! cgroup root `/pgk<N>`, so clusters never share state with each other or
//! with the host. Dropping the [`Cluster`] kills every process it started and
//! every container, unmounts what kubelet and containerd mounted, removes the
//! cgroups, the bridge and the directory. Clusters in one test process run
//! one at a time ([`Cluster::start`] waits for the previous one to be gone).

mod apply;
mod operator;
mod teardown;
mod wait;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, Pod, Secret};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

pub use apply::{apply_file, parse_file};
pub use operator::{run_operator, service_account_kubeconfig};
pub use wait::{wait_for, wait_pod_ready};

/// The uid (and gid) of the `postgres` user in the instance image.
pub const POSTGRES_UID: u32 = 999;
/// The instance image's name, as examples/kubernetes/deploy.yaml names it.
pub const INSTANCE_IMAGE: &str = "pgplane/instance:15";

/// How long the cluster may take from the first process to node Ready.
const START_DEADLINE: Duration = Duration::from_secs(180);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Cluster {
    n: u8,
    dir: PathBuf,
    procs: Vec<(&'static str, Child)>,
    kubeconfig: PathBuf,
    images: Vec<(String, PathBuf)>,
    client: Option<Client>,
    /// From the first process started to the node reporting Ready.
    pub start_to_ready: Duration,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// A bare Pod of the instance image named `name` (no operator: an
/// emptyDir for data, an empty spec, `password` for `postgres`) and the
/// ConfigMap `NAME-spec` it mounts: the floor the operator's pods are
/// measured against.
pub fn bare_pod(name: &str, password: &str) -> (k8s_openapi::api::core::v1::ConfigMap, Pod) {
    let spec = serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("{name}-spec") },
        "data": { "spec.json": "{}" },
    }))
    .expect("a ConfigMap");
    let pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "securityContext": { "runAsUser": POSTGRES_UID, "runAsNonRoot": true },
            "containers": [{
                "name": "postgres",
                "image": INSTANCE_IMAGE,
                "imagePullPolicy": "Never",
                "env": [
                    { "name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata" },
                    { "name": "PGPLANE_SPEC_FILE", "value": "/etc/pgplane/spec.json" },
                    { "name": "POSTGRES_PASSWORD", "value": password },
                ],
                "readinessProbe": {
                    "httpGet": { "path": "/ready", "port": 8008 },
                    "periodSeconds": 1,
                },
                "volumeMounts": [
                    { "name": "data", "mountPath": "/var/lib/postgresql/data" },
                    { "name": "spec", "mountPath": "/etc/pgplane", "readOnly": true },
                ],
            }],
            "volumes": [
                { "name": "data", "emptyDir": {} },
                { "name": "spec", "configMap": { "name": format!("{name}-spec") } },
            ],
        },
    }))
    .expect("a Pod");
    (spec, pod)
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the set-up scripts cache their tools (`PGPLANE_TOOLS_DIR`, default
/// `~/.cache/pgplane`).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("PGPLANE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/pgplane"))
}

/// A binary the workspace builds (`cargo build --bins`), from the target dir.
pub fn workspace_bin(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let bin = target.join("debug").join(name);
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --bins` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The images' docker-archive tars by name, built (or found in the cache)
/// by `scripts/build-images.sh` around `target/debug/pgplane` or `$PGPLANE_BIN`.
pub fn build_images() -> Vec<(String, PathBuf)> {
    let pgplane = std::env::var_os("PGPLANE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_bin("pgplane"));
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/build-images.sh"))
        .arg(&pgplane)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/build-images.sh {} failed",
        pgplane.display()
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, tar) = line.split_once(' ').expect("NAME TAR");
            (name.to_owned(), PathBuf::from(tar))
        })
        .collect()
}

fn kube_binary() -> PathBuf {
    let bin = tools_dir().join("bin/pgplane-kube");
    assert!(
        bin.exists(),
        "{} is missing: run `bash scripts/setup-kube.sh` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Claims `/tmp/pgk<N>` for the first `N` whose directory, bridge and
/// cgroup are all free; creating the directory is the claim.
fn claim() -> (u8, PathBuf) {
    for n in 1..=250u8 {
        let dir = PathBuf::from(format!("/tmp/pgk{n}"));
        if Path::new(&format!("/sys/class/net/pgk{n}")).exists()
            || Path::new(&format!("/sys/fs/cgroup/pids/pgk{n}")).exists()
        {
            continue;
        }
        if std::fs::create_dir(&dir).is_ok() {
            return (n, dir);
        }
    }
    panic!("no free /tmp/pgk<N> (1..=250): remove stale ones left by killed test runs");
}

impl Cluster {
    /// Starts the cluster, imports the images (the instance image built
    /// around `target/debug/pgplane`, or `$PGPLANE_BIN`), and returns once
    /// the node is Ready.
    pub async fn start() -> Cluster {
        let turn = ONE_AT_A_TIME.lock().await;
        let (n, dir) = claim();
        let mut cluster = Cluster {
            n,
            kubeconfig: dir.join("kubeconfig"),
            dir,
            procs: Vec::new(),
            images: Vec::new(),
            client: None,
            start_to_ready: Duration::ZERO,
            _turn: turn,
        };
        let began = Instant::now();
        cluster.start_apiserver().await;
        cluster.start_containerd().await;
        cluster.import_images();
        cluster.start_node();
        cluster.wait_node_ready().await;
        cluster.start_to_ready = began.elapsed();
        cluster
    }

    /// A client with the admin kubeconfig's credentials.
    pub fn client(&self) -> Client {
        self.client.clone().expect("the API server is up")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig (system:masters).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn node_name(&self) -> String {
        format!("pgk{}", self.n)
    }

    /// The image tars imported into the node, by image name.
    pub fn image_tar(&self, name: &str) -> &Path {
        &self
            .images
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no image {name} imported"))
            .1
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap()
    }

    /// The last lines of a component's log (`apiserver`, `containerd`,
    /// `controller-manager`, `scheduler`, `kubelet`).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        tail(&log, lines)
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command) {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(self.log(name))
            .stderr(self.log(name))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.procs.push((name, child));
    }

    /// Panics with the component's log if it has exited.
    fn check_alive(&mut self) {
        for (name, child) in &mut self.procs {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                panic!("{name} exited ({status}):\n{}", tail(&log, 40));
            }
        }
    }

    /// The API server and its etcd; a port taken between picking it and
    /// binding it is retried on new ports.
    async fn start_apiserver(&mut self) {
        for attempt in 1.. {
            let port = free_port();
            let mut cmd = Command::new(kube_binary());
            cmd.arg("apiserver")
                .arg("--node")
                .arg("--data-dir")
                .arg(self.dir.join("apiserver"))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg(format!("--port={port}"));
            self.spawn("apiserver", &mut cmd);
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                if self.kubeconfig.exists() {
                    let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
                    let config = kube::Config::from_custom_kubeconfig(
                        kubeconfig,
                        &KubeConfigOptions::default(),
                    )
                    .await
                    .unwrap();
                    self.client = Some(Client::try_from(config).unwrap());
                    return;
                }
                let (_, child) = self.procs.last_mut().unwrap();
                if child.try_wait().unwrap().is_some() {
                    let log = self.log_tail("apiserver", 30);
                    if attempt < 3 && log.contains("address already in use") {
                        self.procs.pop();
                        break;
                    }
                    panic!("kube-apiserver exited:\n{log}");
                }
                assert!(
                    Instant::now() < deadline,
                    "kube-apiserver not ready after 90s:\n{}",
                    self.log_tail("apiserver", 30)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.containerd_socket())
            .arg("--namespace")
            .arg("k8s.io");
        cmd
    }

    async fn start_containerd(&mut self) {
        let d = self.dir.display().to_string();
        let n = self.n;
        std::fs::create_dir_all(self.dir.join("cni/net.d")).unwrap();
        std::fs::write(
            self.dir.join("cni/net.d/10-pgplane.conflist"),
            serde_json::to_vec_pretty(&serde_json::json!({
                "cniVersion": "1.0.0",
                "name": format!("pgk{n}"),
                "plugins": [{
                    "type": "bridge",
                    "bridge": format!("pgk{n}"),
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": format!("10.244.{n}.0/24") }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": format!("{d}/cni/ipam"),
                    },
                }],
            }))
            .unwrap(),
        )
        .unwrap();
        let config = format!(
            r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/pgplane/pause:test"
  # root here lacks CAP_SYS_RESOURCE: runc must not lower oom_score_adj
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
"#
        );
        let path = self.dir.join("containerd.toml");
        std::fs::write(&path, config).unwrap();
        self.spawn(
            "containerd",
            Command::new("containerd").arg("--config").arg(&path),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = self
                .ctr()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if answered {
                return;
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "containerd not answering after 60s:\n{}",
                self.log_tail("containerd", 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn import_images(&mut self) {
        for (name, tar) in build_images() {
            let out = self
                .ctr()
                .args(["images", "import"])
                .arg(&tar)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ctr images import {}: {}",
                tar.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            self.images.push((name, tar));
        }
    }

    /// The kubelet's cgroup root in every cgroup hierarchy (a cpuset child
    /// needs its parent's cpus and mems before anything can join it).
    fn create_cgroup_root(&self) {
        for hierarchy in teardown::cgroup_hierarchies() {
            let dir = hierarchy.join(format!("pgk{}", self.n));
            std::fs::create_dir_all(&dir).unwrap();
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = std::fs::read_to_string(hierarchy.join(file)) {
                    std::fs::write(dir.join(file), value.trim()).unwrap();
                }
            }
        }
    }

    /// Controller manager, scheduler and kubelet.
    fn start_node(&mut self) {
        let d = self.dir.clone();
        let pki = d.join("apiserver/pki");
        let kube = kube_binary();
        self.spawn(
            "controller-manager",
            Command::new(&kube)
                .arg("controller-manager")
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .arg("--leader-elect=false")
                .arg("--secure-port=0")
                .arg(format!(
                    "--service-account-private-key-file={}",
                    pki.join("sa.key").display()
                ))
                .arg(format!("--root-ca-file={}", pki.join("ca.crt").display()))
                .arg("--controllers=*,-horizontal-pod-autoscaler-controller,-node-ipam-controller"),
        );
        self.spawn(
            "scheduler",
            Command::new(&kube)
                .arg("scheduler")
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .arg("--leader-elect=false")
                .arg("--secure-port=0"),
        );
        self.create_cgroup_root();
        let config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# the machine's cgroups are v1 (cgroup2 only for hugetlb)
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /pgk{n}
cgroupsPerQOS: true
containerRuntimeEndpoint: unix://{d}/containerd.sock
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization: {{mode: AlwaysAllow}}
podLogsDir: {d}/kubelet/logs
resolvConf: ""
failSwapOn: false
enforceNodeAllocatable: []
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{}}
localStorageCapacityIsolation: false
serializeImagePulls: false
"#,
            n = self.n,
            d = d.display(),
            port = free_port(),
        );
        std::fs::create_dir_all(d.join("kubelet")).unwrap();
        std::fs::write(d.join("kubelet/config.yaml"), config).unwrap();
        self.spawn(
            "kubelet",
            Command::new(&kube)
                .arg("kubelet")
                .arg(format!(
                    "--config={}",
                    d.join("kubelet/config.yaml").display()
                ))
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .arg(format!("--root-dir={}", d.join("kubelet/root").display()))
                .arg(format!("--cert-dir={}", d.join("kubelet/pki").display()))
                .arg(format!("--hostname-override={}", self.node_name())),
        );
    }

    async fn wait_node_ready(&mut self) {
        let nodes: Api<Node> = Api::all(self.client());
        let name = self.node_name();
        let waited = wait_for(&nodes, &name, START_DEADLINE, |node| {
            let ready = node
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(Ok(()))
        })
        .await;
        if let Err(e) = waited {
            self.check_alive();
            panic!(
                "node {name} not Ready: {e}\n--- kubelet:\n{}\n--- containerd:\n{}",
                self.log_tail("kubelet", 40),
                self.log_tail("containerd", 20)
            );
        }
    }

    /// A PersistentVolume on a directory of the cluster's, owned by `uid`
    /// (what a provisioner would give a claim; hostPath volumes get no
    /// fsGroup ownership from kubelet).
    pub async fn host_path_volume(&self, name: &str, capacity: &str, uid: u32) -> PersistentVolume {
        let path = self.dir.join("volumes").join(name);
        std::fs::create_dir_all(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": {
                "capacity": { "storage": capacity },
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": { "path": path, "type": "Directory" },
            },
        }))
        .unwrap();
        Api::<PersistentVolume>::all(self.client())
            .create(&PostParams::default(), &pv)
            .await
            .unwrap()
    }

    /// What the containers of `namespace/pod` wrote, from the kubelet's log
    /// directory (the API's log endpoint is not wired to this kubelet).
    pub fn container_logs(&self, namespace: &str, pod: &str) -> String {
        let mut out = String::new();
        let prefix = format!("{namespace}_{pod}_");
        let Ok(entries) = std::fs::read_dir(self.dir.join("kubelet/logs")) else {
            return out;
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            for container in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for log in std::fs::read_dir(container.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                    out.push_str(&format!(
                        "--- {}/{}:\n{}\n",
                        container.file_name().to_string_lossy(),
                        log.file_name().to_string_lossy(),
                        tail(&text, 40)
                    ));
                }
            }
        }
        out
    }

    /// A libpq connection string for Postgres at `host`:5432 with the
    /// credentials in the operator's Secret `namespace/secret` (keys
    /// `username` and `password`), as a client given that Secret connects.
    pub async fn conninfo(&self, namespace: &str, secret: &str, host: &str) -> String {
        let data = Api::<Secret>::namespaced(self.client(), namespace)
            .get(secret)
            .await
            .unwrap_or_else(|e| panic!("reading the Secret {namespace}/{secret}: {e}"))
            .data
            .unwrap_or_default();
        let text = |key: &str| {
            let value = data
                .get(key)
                .unwrap_or_else(|| panic!("the Secret {namespace}/{secret} has no {key}"));
            String::from_utf8(value.0.clone()).unwrap()
        };
        format!(
            "host={host} port=5432 user={} password={} dbname=postgres connect_timeout=10",
            text("username"),
            text("password")
        )
    }

    /// Waits for `namespace/name` to be Ready; when it is not by
    /// `deadline`, or a container cannot start, the error has its status,
    /// its containers' logs and kubelet's log.
    pub async fn pod_ready(
        &self,
        namespace: &str,
        name: &str,
        deadline: Duration,
    ) -> Result<Pod, String> {
        let pods: Api<Pod> = Api::namespaced(self.client(), namespace);
        let e = match wait_pod_ready(&pods, name, deadline).await {
            Ok(pod) => return Ok(pod),
            Err(e) => e,
        };
        let pod = pods.get_opt(name).await.ok().flatten();
        Err(format!(
            "pod {namespace}/{name}: {e}\nstatus: {}\n{}--- kubelet:\n{}",
            serde_json::to_string_pretty(&pod.and_then(|p| p.status)).unwrap(),
            self.container_logs(namespace, name),
            self.log_tail("kubelet", 30)
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        teardown::teardown(self);
    }
}

/// A client that is never used: the field's value until the API server is up.
/// A process a test starts next to the cluster, killed when dropped; its
/// stderr and stdout go to `log`.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { name, child, log }
    }

    /// The last lines of its log, and its exit status if it has exited.
    pub fn log_tail(&mut self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        match self.child.try_wait() {
            Ok(Some(status)) => format!("{} exited ({status}):\n{}", self.name, tail(&log, lines)),
            _ => tail(&log, lines),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
