//! Reconcile throughput of `pgplane-operator`: N `PostgresInstance`
//! resources created at once against the envtest kube-apiserver, the time
//! until every one has its children and a `Progressing` condition, and the
//! operator's memory.
//!
//! Nothing is mocked:
//!
//! 1. the real kube-apiserver + etcd start on loopback (the test harness
//!    `operator/tests/it/envtest.rs`), with the committed CRD and the
//!    namespace `bench`;
//! 2. the release `pgplane-operator` binary runs as a separate process
//!    (`--namespace bench`, plus `--lease-namespace bench` if its `--help`
//!    has that flag; `RUST_LOG=warn`, its log in a temp file), and the
//!    benchmark waits for its admin endpoint's `/ready` (and, where `/metrics`
//!    has `pgplane_operator_leader`, for it to lead);
//! 3. N instances with an empty spec (all defaults) are created concurrently;
//! 4. every 250 ms, LIST calls (metadata only for the children) count the
//!    StatefulSets, Services, Secrets and ConfigMaps labelled
//!    `app.kubernetes.io/managed-by=pgplane-operator`, and the instances whose
//!    `Progressing` condition is `True` for their current generation. An
//!    instance is complete when it has all four children and that condition;
//!    the run ends when all N are complete (or at `--timeout`, listing what is
//!    missing, with a non-zero exit);
//! 5. the operator's memory is its VmRSS (idle before the first create, and
//!    the peak of samples every 100 ms) and its VmHWM at the end, from
//!    `/proc/<pid>/status`; CPU time of the operator and the apiserver comes
//!    from `/proc/<pid>/stat`.
//!
//! No kubelet or StatefulSet controller runs, so no pod ever becomes ready:
//! `Progressing` (not `Ready`) is the end state, and the operator keeps
//! requeueing every instance while the benchmark polls — as it would on a
//! cluster whose pods are still starting.
//!
//! The envtest apiserver's service range is `10.0.0.0/24`: it holds 253
//! ClusterIP Services, so while the operator's Service is not headless, runs
//! above 253 instances cannot complete (the rest fail with "range is full",
//! which the timeout report and the operator's last warning show).
//!
//! Run (Linux only, needs `scripts/setup-kube.sh` to have built the apiserver):
//!
//! ```text
//! cargo build --release -p operator --bins --examples
//! cargo run --release -p operator --example bench_reconcile -- --instances 1000
//! ```

// The harness's in-process `RunningOperator` is not used: the operator runs
// as its own process here, so that its memory is its own.
#[allow(dead_code)]
#[path = "../tests/it/envtest.rs"]
mod envtest;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use crd::{ConditionStatus, ConditionType, PostgresInstance};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACE: &str = "bench";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=pgplane-operator";
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`: Linux's
/// USER_HZ, fixed at 100 by the user-space ABI.
const USER_HZ: f64 = 100.0;

/// Reconcile throughput of pgplane-operator against the envtest apiserver.
///
/// Starts the real kube-apiserver + etcd, runs the release pgplane-operator
/// binary as a separate process watching namespace `bench`, creates
/// --instances PostgresInstance resources (empty spec) at once, and polls
/// with LIST calls until every one has its StatefulSet, Service, Secret and
/// ConfigMap and a Progressing=True condition for its generation. Prints the
/// time that took, per-instance latencies, the operator's memory (idle RSS,
/// peak RSS, VmHWM), CPU time and reconcile counters. Progress goes to
/// stderr, the summary to stdout. Exits non-zero on timeout, naming what is
/// missing.
///
/// Build first: `cargo build --release -p operator --bins --examples`.
#[derive(Debug, Parser)]
#[command(name = "bench_reconcile", verbatim_doc_comment)]
struct Args {
    /// Number of PostgresInstance resources to create at once.
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Seconds from the first create after which the run fails.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Create requests in flight at once.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
    /// Milliseconds between two polls (each poll is five LIST calls).
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
    /// The pgplane-operator binary [default: next to this example, i.e.
    /// <target-dir>/release/pgplane-operator].
    #[arg(long)]
    operator_bin: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // On Ctrl-C the benchmark future is dropped, and with it the operator
    // and the apiserver processes (their guards kill them).
    let result = tokio::select! {
        result = run(args) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench_reconcile: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.instances > 0, "--instances must be at least 1");
    let operator_bin = operator_binary(args.operator_bin.as_deref())?;

    eprintln!("starting kube-apiserver + etcd …");
    let server = envtest::ApiServer::start().await;
    server.install_crd().await;
    server.namespace(NAMESPACE).await;
    let apiserver_pid = server
        .pid()
        .context("the envtest harness has no apiserver process")?;

    eprintln!("starting {} …", operator_bin.display());
    let mut operator = OperatorProcess::start(&operator_bin, &server.kubeconfig())?;
    operator.wait_ready().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = proc_status_kib(operator.pid(), "VmRSS")?;
    let peak_rss = RssSampler::start(operator.pid());
    let cpu_before = CpuTimes::now(operator.pid(), apiserver_pid)?;

    let client = server.client.clone();
    let started = Instant::now();
    let created = create_instances(&client, args.instances, args.create_concurrency).await?;
    let created_after = started.elapsed();
    eprintln!(
        "{} instances created in {:.1} s",
        args.instances,
        created_after.as_secs_f64()
    );

    let deadline = started + Duration::from_secs(args.timeout);
    let poll = Duration::from_millis(args.poll_ms);
    let outcome = wait_complete(&client, &created, started, deadline, poll, &mut operator).await?;
    let all_after = started.elapsed();

    let cpu = CpuTimes::now(operator.pid(), apiserver_pid)?.since(&cpu_before);
    let metrics = operator.metrics().await?;
    let memory = Memory {
        idle_kib: idle_rss,
        peak_kib: peak_rss
            .stop()
            .max(proc_status_kib(operator.pid(), "VmRSS")?),
        hwm_kib: proc_status_kib(operator.pid(), "VmHWM")?,
    };
    print_summary(&Summary {
        instances: args.instances,
        created_after,
        all_after,
        latencies: latencies(&created, &outcome.completed),
        max_poll_gap: outcome.max_poll_gap,
        memory,
        cpu,
        metrics,
        warnings_logged: operator.warnings_logged(),
        incomplete: outcome.incomplete.clone(),
    });
    match outcome.incomplete {
        None => Ok(()),
        Some(missing) => {
            let last_warning = operator.last_warning().unwrap_or_default();
            bail!(
                "timed out after {:.0} s: {missing}\nlast operator warning: {last_warning}",
                all_after.as_secs_f64()
            )
        }
    }
}

/// `--operator-bin`, or `pgplane-operator` in the directory of this example's
/// own profile (`<target>/release/examples/bench_reconcile` → `<target>/release`).
fn operator_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(path) => path.to_owned(),
        None => {
            let exe = std::env::current_exe().context("locating this executable")?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or_else(|| anyhow!("{} has no grandparent directory", exe.display()))?;
            profile_dir.join("pgplane-operator")
        }
    };
    anyhow::ensure!(
        path.is_file(),
        "{} not found: run `cargo build --release -p operator --bins --examples` or pass --operator-bin",
        path.display()
    );
    Ok(path)
}

// ---------------------------------------------------------------- processes

/// The operator process; killed on drop. Its stderr goes to a log file in
/// a temp dir, whose tail is shown if it exits early.
struct OperatorProcess {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl OperatorProcess {
    fn start(bin: &Path, kubeconfig: &Path) -> Result<Self> {
        let admin = free_loopback_addr()?;
        let log_dir = tempfile::tempdir().context("creating the operator's log dir")?;
        let log = log_dir.path().join("operator.log");
        let log_file = std::fs::File::create(&log).context("creating the operator log")?;
        let mut command = Command::new(bin);
        command
            .args(["--namespace", NAMESPACE, "--admin-addr", &admin.to_string()])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if supports_flag(bin, "--lease-namespace")? {
            command.args(["--lease-namespace", NAMESPACE]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child,
            admin,
            log,
            _log_dir: log_dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls until `/ready` answers 200 and, for an operator with leader
    /// election (a standby is ready too), `/metrics` shows it leading; fails
    /// if the process exits.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("operator exited ({status}):\n{}", self.log_tail(30));
            }
            if let Ok((200, _)) = http_get(self.admin, "/ready").await {
                if self.metrics().await?.leader != Some(0) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "operator not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if the operator exited since it became ready.
    fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("operator exited ({status}):\n{}", self.log_tail(30)),
            None => Ok(()),
        }
    }

    async fn metrics(&self) -> Result<OperatorMetrics> {
        let (status, body) = http_get(self.admin, "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(OperatorMetrics::parse(&body))
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The last WARN or ERROR line of the operator's log.
    fn last_warning(&self) -> Option<String> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        log.lines()
            .rev()
            .find(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .map(str::to_owned)
    }

    fn warnings_logged(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .count()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `bin --help` mentions `flag` (so the benchmark runs against
/// operator versions with and without it).
fn supports_flag(bin: &Path, flag: &str) -> Result<bool> {
    let output = Command::new(bin)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", bin.display()))?;
    Ok(String::from_utf8_lossy(&output.stdout).contains(flag))
}

fn free_loopback_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// A GET against the operator's HTTP/1.0 admin endpoint: status and body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET {path}: timed out"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: malformed response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("GET {path}: no status code in {head:?}"))?;
    Ok((status, body.to_owned()))
}

// ------------------------------------------------------------------ workload

fn instance_name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// Creates `n` instances with an empty spec, `concurrency` requests in
/// flight; returns when each create was accepted, by name.
async fn create_instances(
    client: &Client,
    n: usize,
    concurrency: usize,
) -> Result<BTreeMap<String, Instant>> {
    let api: Api<PostgresInstance> = Api::namespaced(client.clone(), NAMESPACE);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = instance_name(i);
                let instance: PostgresInstance = serde_json::from_value(serde_json::json!({
                    "apiVersion": "pgplane.io/v1", "kind": "PostgresInstance",
                    "metadata": { "name": name }, "spec": {},
                }))?;
                api.create(&PostParams::default(), &instance)
                    .await
                    .with_context(|| format!("creating {name}"))?;
                anyhow::Ok((name, Instant::now()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// What one poll saw: the instance names that have each child, and those
/// that are `Progressing` for their current generation.
#[derive(Debug, Default)]
struct Snapshot {
    statefulsets: HashSet<String>,
    services: HashSet<String>,
    secrets: HashSet<String>,
    configmaps: HashSet<String>,
    progressing: HashSet<String>,
}

impl Snapshot {
    async fn take(client: &Client) -> Result<Self> {
        let (statefulsets, services, secrets, configmaps, progressing) = tokio::try_join!(
            children_of::<StatefulSet>(client),
            children_of::<Service>(client),
            children_of::<Secret>(client),
            children_of::<ConfigMap>(client),
            progressing_instances(client),
        )?;
        Ok(Self {
            statefulsets,
            services,
            secrets,
            configmaps,
            progressing,
        })
    }

    fn is_complete(&self, name: &str) -> bool {
        self.missing(name).is_empty()
    }

    fn missing(&self, name: &str) -> Vec<&'static str> {
        [
            ("StatefulSet", &self.statefulsets),
            ("Service", &self.services),
            ("Secret", &self.secrets),
            ("ConfigMap", &self.configmaps),
            ("Progressing", &self.progressing),
        ]
        .into_iter()
        .filter(|(_, names)| !names.contains(name))
        .map(|(what, _)| what)
        .collect()
    }

    fn counts(&self) -> String {
        format!(
            "sts {} svc {} secret {} cm {} progressing {}",
            self.statefulsets.len(),
            self.services.len(),
            self.secrets.len(),
            self.configmaps.len(),
            self.progressing.len()
        )
    }
}

/// The `app.kubernetes.io/instance` label of every operator-managed `K` in
/// the namespace (one metadata-only LIST).
async fn children_of<K>(client: &Client) -> Result<HashSet<String>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), NAMESPACE);
    let list = api
        .list_metadata(&ListParams::default().labels(MANAGED_BY))
        .await
        .with_context(|| format!("listing {}", K::kind(&())))?;
    Ok(list
        .items
        .iter()
        .filter_map(|child| child.labels().get(INSTANCE_LABEL).cloned())
        .collect())
}

/// Instances whose status has `Progressing=True`, and whose status and
/// condition both describe the current `metadata.generation`.
async fn progressing_instances(client: &Client) -> Result<HashSet<String>> {
    let api: Api<PostgresInstance> = Api::namespaced(client.clone(), NAMESPACE);
    let list = api
        .list(&ListParams::default())
        .await
        .context("listing PostgresInstances")?;
    Ok(list
        .items
        .iter()
        .filter(|pi| is_progressing(pi))
        .map(|pi| pi.name_any())
        .collect())
}

fn is_progressing(pi: &PostgresInstance) -> bool {
    let (Some(generation), Some(status)) = (pi.metadata.generation, pi.status.as_ref()) else {
        return false;
    };
    status.observed_generation == Some(generation)
        && status
            .condition(ConditionType::Progressing)
            .is_some_and(|c| {
                c.status == ConditionStatus::True && c.observed_generation == Some(generation)
            })
}

/// How the wait for completion ended.
struct Outcome {
    /// When each instance was first seen complete (by the poll's time).
    completed: BTreeMap<String, Instant>,
    /// The longest time between two polls' answers (after the creates): the
    /// resolution of the per-instance times.
    max_poll_gap: Duration,
    /// At the timeout: what was still missing.
    incomplete: Option<String>,
}

/// Polls until one snapshot shows every created instance complete, or the
/// deadline passes.
async fn wait_complete(
    client: &Client,
    created: &BTreeMap<String, Instant>,
    started: Instant,
    deadline: Instant,
    poll: Duration,
    operator: &mut OperatorProcess,
) -> Result<Outcome> {
    let mut completed: BTreeMap<String, Instant> = BTreeMap::new();
    let mut max_poll_gap = Duration::ZERO;
    let mut previous_poll = Instant::now();
    let mut last_progress: Option<Instant> = None;
    loop {
        operator.ensure_running()?;
        let polled = Instant::now();
        let snapshot = Snapshot::take(client).await?;
        let seen = Instant::now();
        max_poll_gap = max_poll_gap.max(seen - previous_poll);
        previous_poll = seen;
        for name in created.keys() {
            if !completed.contains_key(name) && snapshot.is_complete(name) {
                completed.insert(name.clone(), seen);
            }
        }
        let all = created.keys().all(|name| snapshot.is_complete(name));
        if all || last_progress.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
            last_progress = Some(Instant::now());
            eprintln!(
                "t={:6.1}s  {}  complete {}/{}  operator RSS {} MiB  (poll took {:.1} s)",
                started.elapsed().as_secs_f64(),
                snapshot.counts(),
                completed.len(),
                created.len(),
                proc_status_kib(operator.pid(), "VmRSS").unwrap_or(0) / 1024,
                (seen - polled).as_secs_f64(),
            );
        }
        if all || Instant::now() >= deadline {
            let incomplete = (!all).then(|| describe_missing(&snapshot, created));
            return Ok(Outcome {
                completed,
                max_poll_gap,
                incomplete,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

fn describe_missing(snapshot: &Snapshot, created: &BTreeMap<String, Instant>) -> String {
    let incomplete: Vec<(&String, Vec<&str>)> = created
        .keys()
        .map(|name| (name, snapshot.missing(name)))
        .filter(|(_, missing)| !missing.is_empty())
        .collect();
    let mut by_what: BTreeMap<&str, usize> = BTreeMap::new();
    for what in incomplete.iter().flat_map(|(_, missing)| missing) {
        *by_what.entry(what).or_default() += 1;
    }
    let examples: Vec<String> = incomplete
        .iter()
        .take(10)
        .map(|(name, missing)| format!("{name} (no {})", missing.join(", no ")))
        .collect();
    format!(
        "{} of {} instances incomplete; missing by kind: {by_what:?}; e.g. {}",
        incomplete.len(),
        created.len(),
        examples.join("; ")
    )
}

// ------------------------------------------------------------- measurements

/// Peak VmRSS of a process, sampled on a background task.
struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_kib.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(rss) = proc_status_kib(pid, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(RSS_SAMPLE_EVERY).await;
            }
        });
        Self { peak_kib, task }
    }

    fn stop(self) -> u64 {
        self.task.abort();
        self.peak_kib.load(Ordering::Relaxed)
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// User + system CPU seconds of a process (all its threads).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after_comm = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    // Fields 14 and 15 (utime, stime); `after_comm` starts at field 3.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / USER_HZ)
}

#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    operator: f64,
    apiserver: f64,
    benchmark: f64,
}

impl CpuTimes {
    fn now(operator: u32, apiserver: u32) -> Result<Self> {
        Ok(Self {
            operator: cpu_seconds(operator)?,
            apiserver: cpu_seconds(apiserver)?,
            benchmark: cpu_seconds(std::process::id())?,
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            operator: self.operator - before.operator,
            apiserver: self.apiserver - before.apiserver,
            benchmark: self.benchmark - before.benchmark,
        }
    }
}

/// The operator's counters from `/metrics`.
#[derive(Debug, Default)]
struct OperatorMetrics {
    /// `pgplane_operator_leader`, on operators with leader election.
    leader: Option<u64>,
    reconciles: u64,
    errors: BTreeMap<String, u64>,
}

impl OperatorMetrics {
    fn parse(text: &str) -> Self {
        let mut metrics = Self::default();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            if name == "pgplane_operator_leader" {
                metrics.leader = Some(value);
            } else if name == "pgplane_operator_reconciles_total" {
                metrics.reconciles = value;
            } else if let Some(labels) =
                name.strip_prefix("pgplane_operator_reconcile_errors_total")
            {
                let kind = labels
                    .trim_start_matches("{kind=\"")
                    .trim_end_matches("\"}");
                metrics.errors.insert(kind.to_owned(), value);
            }
        }
        metrics
    }

    fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

struct Memory {
    idle_kib: u64,
    peak_kib: u64,
    hwm_kib: u64,
}

/// Per instance: from its create being accepted to the poll that first saw
/// it complete, sorted.
fn latencies(
    created: &BTreeMap<String, Instant>,
    completed: &BTreeMap<String, Instant>,
) -> Vec<Duration> {
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, at)| Some(completed.get(name)?.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    latencies
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Summary {
    instances: usize,
    created_after: Duration,
    all_after: Duration,
    latencies: Vec<Duration>,
    max_poll_gap: Duration,
    memory: Memory,
    cpu: CpuTimes,
    metrics: OperatorMetrics,
    warnings_logged: usize,
    /// Set on a timeout: what was still missing.
    incomplete: Option<String>,
}

fn print_summary(s: &Summary) {
    let secs = |d: Duration| d.as_secs_f64();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let wall = secs(s.all_after);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "instances: {} (created in {:.1} s)",
        s.instances,
        secs(s.created_after)
    );
    match &s.incomplete {
        None => println!(
            "all children + Progressing after {wall:.1} s from the first create ({:.0} instances/s)",
            s.instances as f64 / wall
        ),
        Some(missing) => println!(
            "TIMED OUT after {wall:.1} s from the first create: {} of {} complete; {missing}",
            s.latencies.len(),
            s.instances
        ),
    }
    println!(
        "per instance, create accepted -> first poll seeing it complete: min {:.1} s, median {:.1} s, p99 {:.1} s, max {:.1} s (polls up to {:.1} s apart)",
        secs(percentile(&s.latencies, 0.0)),
        secs(percentile(&s.latencies, 50.0)),
        secs(percentile(&s.latencies, 99.0)),
        secs(percentile(&s.latencies, 100.0)),
        secs(s.max_poll_gap),
    );
    println!(
        "operator RSS: idle {:.1} MiB, peak {:.1} MiB (VmHWM {:.1} MiB)",
        mib(s.memory.idle_kib),
        mib(s.memory.peak_kib),
        mib(s.memory.hwm_kib)
    );
    println!(
        "CPU time over those {wall:.1} s on {cpus} CPUs: operator {:.1} s, kube-apiserver+etcd {:.1} s, benchmark {:.1} s",
        s.cpu.operator, s.cpu.apiserver, s.cpu.benchmark
    );
    let errors: Vec<String> = s
        .metrics
        .errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect();
    println!(
        "operator reconciles: {}, errors: {}{}",
        s.metrics.reconciles,
        s.metrics.error_total(),
        if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join(", "))
        },
    );
    println!(
        "operator log (RUST_LOG=warn): {} WARN/ERROR lines",
        s.warnings_logged
    );
}
