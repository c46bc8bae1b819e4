//! Standbys through `pgplane up`: failover time (`kill -9` of the primary →
//! the first write through the read-write URI), the write outage of a
//! switchover, replication lag under a fixed-rate pgbench load, and what a
//! standby costs in memory and CPU. Each figure is printed next to the same
//! figure for one server without standbys, measured in the same run: a
//! crashed single server is restarted in place, and a restart of one is a
//! full outage.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use api::Client;
use domain::{InstanceSpec, MemberRole, State};

use crate::harness::{median, ms, scratch_dir};
use crate::scenarios::{start_up, wait_for};

const WAIT: Duration = Duration::from_secs(300);
/// Per attempt: a connection to a member that is gone fails at once, one
/// that hangs is given up after this.
const ATTEMPT: Duration = Duration::from_secs(1);
const FAILOVER_GOAL: Duration = Duration::from_secs(5);
const SWITCHOVER_GOAL: Duration = Duration::from_secs(1);

pub async fn replicas(runs: usize, rate: u32, seconds: u32) -> anyhow::Result<()> {
    ensure!(runs >= 1, "--runs must be at least 1");
    println!("== standbys: failover, switchover, lag and cost ({runs} runs each, median)");
    let dir = scratch_dir()?;
    let (_up, client) = start_up(dir.path()).await?;
    let instances = dir.path().join("up/instances");

    let solo = create(&client, "solo", 1).await?;
    let ha = create(&client, "ha", 3).await?;
    wait_streaming(&client, "ha", 2).await?;
    let solo_uri = client.credentials("solo").await?.uri;
    let rw = client.credentials("ha").await?.read_write_uri;
    for uri in [&solo_uri, &rw] {
        execute(
            uri,
            "create table if not exists w (id bigserial primary key, at timestamptz default now())",
        )
        .await?;
    }

    // Failover, next to a single server's crash restart.
    let mut crash = Vec::new();
    for _ in 0..runs {
        let port = client
            .get_instance(&solo.name)
            .await?
            .connection
            .context("no connection")?
            .port;
        let lost = kill_postmaster(&instances, port)?;
        crash.push(first_write_after(lost, &solo_uri).await?);
        wait_for(&client, &solo.name, State::Up, WAIT).await?;
    }
    let mut failover = Vec::new();
    for _ in 0..runs {
        wait_streaming(&client, "ha", 2).await?;
        let port = client
            .get_instance(&ha.name)
            .await?
            .connection
            .context("no connection")?
            .port;
        let lost = kill_postmaster(&instances, port)?;
        failover.push(first_write_after(lost, &rw).await?);
        // Until the data plane reports the new primary, the last report
        // still names the old one.
        primary_moved(&client, "ha", port).await?;
    }
    println!(
        "one server   kill -9 → first write (restarted in place): median {}  [min {}, max {}]",
        ms(median(&mut crash)),
        ms(*crash.iter().min().unwrap()),
        ms(*crash.iter().max().unwrap())
    );
    println!(
        "failover     kill -9 of the primary → first write through the read-write URI: median {}  [min {}, max {}]  (goal ≤ {})",
        ms(median(&mut failover)),
        ms(*failover.iter().min().unwrap()),
        ms(*failover.iter().max().unwrap()),
        ms(FAILOVER_GOAL)
    );

    // Switchover, next to a restart of one server.
    let mut restart = Vec::new();
    for _ in 0..runs {
        let writer = Writer::start(&solo_uri);
        writer.wait_for_writes(5).await?;
        let from = writer.commits();
        client.instance_action(&solo.name, "restart").await?;
        wait_for(&client, &solo.name, State::Up, WAIT).await?;
        restart.push(writer.outage_after(from).await?);
    }
    let mut switchover = Vec::new();
    let mut reported = Vec::new();
    for _ in 0..runs {
        wait_streaming(&client, "ha", 2).await?;
        let writer = Writer::start(&rw);
        writer.wait_for_writes(5).await?;
        let from = writer.commits();
        let seen = client.history(&ha.name).await?.items.len();
        client.request_switchover(&ha.name, None).await?;
        let note = outcome(&client, &ha.name, seen).await?;
        switchover.push(writer.outage_after(from).await?);
        if let Some(secs) = note
            .split("writes refused for ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<f64>().ok())
        {
            reported.push(Duration::from_secs_f64(secs));
        }
    }
    println!(
        "one server   instance restart → longest gap between commits: median {}",
        ms(median(&mut restart))
    );
    println!(
        "switchover   longest gap between commits through the read-write URI: median {}  [max {}]  (goal ≤ {}; the data plane reports writes refused for median {})",
        ms(median(&mut switchover)),
        ms(*switchover.iter().max().unwrap()),
        ms(SWITCHOVER_GOAL),
        match reported.is_empty() {
            true => "n/a".to_owned(),
            false => ms(median(&mut reported)),
        }
    );

    // Lag and cost under a fixed-rate write load.
    wait_streaming(&client, "ha", 2).await?;
    lag_and_cost(&client, &instances, rate, seconds).await
}

async fn create(client: &Client, name: &str, replicas: u32) -> anyhow::Result<api::Instance> {
    let created = client
        .create_instance(&api::CreateInstance {
            name: name.to_owned(),
            spec: InstanceSpec {
                replicas,
                ..InstanceSpec::default()
            },
            data_plane: None,
            owner: None,
        })
        .await?;
    wait_for(client, &created.id.to_string(), State::Up, WAIT).await
}

/// Waits until the instance has a primary and `standbys` streaming standbys.
async fn wait_streaming(client: &Client, name: &str, standbys: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let inst = client.get_instance(name).await?;
        let members = inst.observed.and_then(|o| o.members).unwrap_or_default();
        let primaries = members
            .iter()
            .filter(|m| m.role == MemberRole::Primary)
            .count();
        let streaming = members
            .iter()
            .filter(|m| m.role == MemberRole::Standby && m.state.as_deref() == Some("streaming"))
            .count();
        if inst.state == State::Up && primaries == 1 && streaming == standbys {
            return Ok(());
        }
        if start.elapsed() > WAIT {
            bail!("{name}: no primary with {standbys} streaming standbys after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the instance's primary is not on `port`.
async fn primary_moved(client: &Client, name: &str, port: u16) -> anyhow::Result<()> {
    let start = Instant::now();
    while client.get_instance(name).await?.connection.map(|c| c.port) == Some(port) {
        if start.elapsed() > WAIT {
            bail!("{name}: the primary is still on port {port} after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The postmaster listening on `port` among the data directories under
/// `instances`.
fn postmaster_on(instances: &Path, port: u16) -> anyhow::Result<(i32, PathBuf)> {
    for entry in std::fs::read_dir(instances)?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("postmaster.pid")) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        if lines.get(3).and_then(|p| p.trim().parse::<u16>().ok()) == Some(port) {
            return Ok((lines[0].trim().parse()?, entry.path()));
        }
    }
    bail!("no postmaster on port {port} under {}", instances.display())
}

/// SIGKILLs the postmaster on `port`; returns when.
fn kill_postmaster(instances: &Path, port: u16) -> anyhow::Result<Instant> {
    let (pid, dir) = postmaster_on(instances, port)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .with_context(|| format!("killing postmaster {pid} of {}", dir.display()))?;
    Ok(Instant::now())
}

async fn connect(uri: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = uri.parse()?;
    config.connect_timeout(ATTEMPT);
    let (client, conn) = tokio::time::timeout(ATTEMPT, config.connect(tokio_postgres::NoTls))
        .await
        .context("connecting timed out")??;
    tokio::spawn(conn);
    Ok(client)
}

async fn execute(uri: &str, sql: &str) -> anyhow::Result<()> {
    connect(uri).await?.batch_execute(sql).await?;
    Ok(())
}

/// How long after `since` a fresh connection through `uri` first commits.
async fn first_write_after(since: Instant, uri: &str) -> anyhow::Result<Duration> {
    loop {
        let attempt = async {
            let client = connect(uri).await?;
            tokio::time::timeout(
                ATTEMPT,
                client.batch_execute("insert into w default values"),
            )
            .await
            .context("the write timed out")??;
            anyhow::Ok(())
        };
        if attempt.await.is_ok() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > WAIT {
            bail!("no write through {} within {WAIT:?}", redact(uri));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn redact(uri: &str) -> String {
    match uri.split_once('@') {
        Some((_, rest)) => format!("postgres://…@{rest}"),
        None => uri.to_owned(),
    }
}

/// The history entry after the first `seen` that says how a switchover
/// went: its note, or the error it failed with.
async fn outcome(client: &Client, name: &str, seen: usize) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        let history = client.history(name).await?;
        for h in history.items.iter().skip(seen) {
            match h.event {
                api::HistoryEvent::SwitchedOver => return Ok(h.detail.clone().unwrap_or_default()),
                api::HistoryEvent::SwitchoverFailed => {
                    bail!(
                        "switchover failed: {}",
                        h.detail.clone().unwrap_or_default()
                    )
                }
                _ => {}
            }
        }
        if start.elapsed() > WAIT {
            bail!("{name}: no switchover outcome after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client committing one row after another through one URI, reconnecting
/// (and so following the primary) whenever a write fails; it keeps the time
/// of every commit.
struct Writer {
    commits: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(uri: &str) -> Writer {
        let commits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (uri, out) = (uri.to_owned(), commits.clone());
        let task = tokio::spawn(async move {
            let mut client = None;
            loop {
                if client.is_none() {
                    client = connect(&uri).await.ok();
                }
                let Some(c) = &client else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                let write =
                    tokio::time::timeout(ATTEMPT, c.batch_execute("insert into w default values"))
                        .await;
                match write {
                    Ok(Ok(())) => out.lock().unwrap().push(Instant::now()),
                    _ => client = None,
                }
            }
        });
        Writer { commits, task }
    }

    fn commits(&self) -> usize {
        self.commits.lock().unwrap().len()
    }

    async fn wait_for_writes(&self, n: usize) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.commits() < n {
            if start.elapsed() > WAIT {
                bail!("the writer committed {} rows in {WAIT:?}", self.commits());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Waits for writes to flow again, stops, and returns the longest gap
    /// between two commits from commit `from` on.
    async fn outage_after(self, from: usize) -> anyhow::Result<Duration> {
        let resumed = self.commits();
        self.wait_for_writes(resumed + 20).await?;
        self.task.abort();
        let commits = self.commits.lock().unwrap();
        Ok(commits[from.saturating_sub(1)..]
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default())
    }
}

/// Replication lag sampled on the primary while pgbench writes at `rate`
/// transactions per second, and the memory (PSS) and CPU of each member's
/// processes meanwhile.
async fn lag_and_cost(
    client: &Client,
    instances: &Path,
    rate: u32,
    seconds: u32,
) -> anyhow::Result<()> {
    let creds = client.credentials("ha").await?;
    let inst = client.get_instance("ha").await?;
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", "5", &creds.uri])
        .output()?;
    ensure!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let primary_port = inst.connection.as_ref().context("no connection")?.port;
    let postmasters: Vec<(String, MemberRole, i32)> = inst
        .connection
        .as_ref()
        .map(|c| c.members.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let role = match m.port == primary_port {
                true => MemberRole::Primary,
                false => MemberRole::Standby,
            };
            Ok((
                format!("port {}", m.port),
                role,
                postmaster_on(instances, m.port)?.0,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let cpu_before: Vec<u64> = postmasters
        .iter()
        .map(|(_, _, pid)| cpu_ticks(*pid))
        .collect();
    let wall = Instant::now();
    let mut bench = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            "2",
            "-j",
            "1",
            "-R",
            &rate.to_string(),
            "-T",
            &seconds.to_string(),
            &creds.uri,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let primary = connect(&creds.uri).await?;
    let (mut lag_ms, mut lag_bytes) = (Vec::new(), Vec::new());
    let mut pss: Vec<u64> = vec![0; postmasters.len()];
    loop {
        if let Some(status) = bench.try_wait()? {
            ensure!(status.success(), "pgbench failed");
            break;
        }
        for row in primary
            .query(
                "select coalesce(extract(epoch from replay_lag) * 1000, 0)::float8, \
                        coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::float8 \
                 from pg_stat_replication",
                &[],
            )
            .await?
        {
            lag_ms.push(row.get::<_, f64>(0));
            lag_bytes.push(row.get::<_, f64>(1));
        }
        for (i, (_, _, pid)) in postmasters.iter().enumerate() {
            pss[i] = pss[i].max(tree_pss_kib(*pid));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = wall.elapsed().as_secs_f64();
    let cpu: Vec<f64> = postmasters
        .iter()
        .zip(cpu_before)
        .map(|((_, _, pid), before)| {
            (cpu_ticks(*pid) - before) as f64 / ticks_per_second() / elapsed * 100.0
        })
        .collect();
    ensure!(
        !lag_ms.is_empty(),
        "no standby was streaming during the load"
    );
    println!(
        "lag          pgbench -R {rate} for {seconds} s, sampled every 100 ms on the primary: replay lag p50 {:.1} ms, p99 {:.1} ms; WAL behind p50 {:.0} B, p99 {:.0} B ({} samples)",
        percentile(&mut lag_ms, 0.50),
        percentile(&mut lag_ms, 0.99),
        percentile(&mut lag_bytes, 0.50),
        percentile(&mut lag_bytes, 0.99),
        lag_ms.len()
    );
    for (i, (name, role, _)) in postmasters.iter().enumerate() {
        println!(
            "cost         {name} ({}): peak PSS {:.1} MiB, CPU {:.1} % of a core",
            match role {
                MemberRole::Primary => "primary",
                MemberRole::Standby => "standby",
            },
            pss[i] as f64 / 1024.0,
            cpu[i]
        );
    }
    Ok(())
}

fn percentile(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() as f64 - 1.0) * p).round() as usize;
    xs[i]
}

/// A process and its children (a postmaster's backends are its children).
fn tree(pid: i32) -> Vec<i32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if stat_field(child, 3) == Some(pid as u64) {
                pids.push(child);
            }
        }
    }
    pids
}

/// Field `n` (0-based, after the command name) of /proc/PID/stat.
fn stat_field(pid: i32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n - 2)?.parse().ok()
}

/// utime + stime of a process and its children, reaped ones included.
fn cpu_ticks(pid: i32) -> u64 {
    tree(pid)
        .into_iter()
        .map(|p| {
            let own = stat_field(p, 13).unwrap_or(0) + stat_field(p, 14).unwrap_or(0);
            match p == pid {
                true => own + stat_field(p, 15).unwrap_or(0) + stat_field(p, 16).unwrap_or(0),
                false => own,
            }
        })
        .sum()
}

/// Linux reports /proc times in USER_HZ, 100 per second on every
/// architecture.
fn ticks_per_second() -> f64 {
    100.0
}

/// Proportional set size of a process and its children, KiB: shared
/// buffers are counted once across the processes that map them.
fn tree_pss_kib(pid: i32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}
