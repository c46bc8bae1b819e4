//! Backups through pgplane next to pgBackRest run by hand on the same data:
//! a full backup, a restore to a connectable server, and the archive lag
//! under a sustained write load.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use api::Client;

use crate::harness::{free_port, median, ms, scratch_dir};
use crate::scenarios::{start_up, wait_for, POLL};

const WAIT: Duration = Duration::from_secs(1800);

pub async fn backup(scale: u32, runs: usize) -> anyhow::Result<()> {
    println!(
        "== backup and restore of a pgbench database (scale {scale}), {runs} runs each, median"
    );
    let dir = scratch_dir()?;
    let (_up, client) = start_up(dir.path()).await?;
    let data_dir = dir.path().join("up");
    let created = client
        .create_instance(&api::CreateInstance {
            name: "bench".into(),
            spec: domain::InstanceSpec {
                resources: domain::Resources {
                    cpu: "2".into(),
                    memory: "2Gi".into(),
                },
                ..Default::default()
            },
            data_plane: None,
            owner: None,
        })
        .await?;
    let id = created.id.to_string();
    wait_for(&client, &id, domain::State::Up, Duration::from_secs(120)).await?;
    backups_at_least(&client, "bench", 1).await?;
    let uri = client.credentials("bench").await?.uri;
    let t0 = Instant::now();
    run(Command::new("pgbench").args(["-i", "-q", "-s", &scale.to_string(), &uri]))?;
    let size = psql(&uri, "select pg_database_size('postgres')")?;
    println!(
        "data     pgbench -i -s {scale}: {:.2} GiB in {}",
        size.parse::<f64>()? / f64::from(1 << 30),
        ms(t0.elapsed())
    );

    let stanza = format!("i-{}", &created.id.simple().to_string()[..12]);
    let user = format!("pgplane-{stanza}");
    let conf = data_dir
        .join("instances")
        .join(format!("{stanza}.pgbackrest"))
        .join("pgbackrest.conf");
    let direct_backup = || -> anyhow::Result<Duration> {
        let t = Instant::now();
        run(Command::new("runuser")
            .args(["-u", &user, "--", "pgbackrest"])
            .args([
                &format!("--config={}", conf.display()),
                &format!("--stanza={stanza}"),
                "--type=full",
                "backup",
            ]))?;
        Ok(t.elapsed())
    };
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        direct.push(direct_backup()?);
        let before = history_len(&client, "bench").await?;
        let t = Instant::now();
        client.request_backup("bench").await?;
        backup_outcome(&client, "bench", before).await?;
        through.push(t.elapsed());
    }
    let (d, p) = (median(&mut direct), median(&mut through));
    println!(
        "floor    pgbackrest --type=full backup, run by hand as the instance's user: median {}",
        ms(d)
    );
    println!(
        "pgplane  API request → queue → conductor → pgBackRest → catalog → history: median {}",
        ms(p)
    );
    println!(
        "ratio    {:.2}× the floor (goal ≤ 1.1×)",
        p.as_secs_f64() / d.as_secs_f64()
    );

    // Restore: a branch to Up and connectable, next to pgBackRest's own
    // restore and recovery run by hand into a directory of the same user.
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for i in 0..runs {
        direct.push(direct_restore(&data_dir, &stanza, &user, &conf, i)?);
        let name = format!("branch-{i}");
        let t = Instant::now();
        let branch = client
            .create_instance(&api::CreateInstance {
                name: name.clone(),
                spec: domain::InstanceSpec {
                    restore: Some(domain::RestoreSpec {
                        from: "bench".into(),
                        at: None,
                        lsn: None,
                    }),
                    ..Default::default()
                },
                data_plane: None,
                owner: None,
            })
            .await?;
        let bid = branch.id.to_string();
        up_gently(&client, &bid).await?;
        let creds = client.credentials(&bid).await?;
        psql(&creds.uri, "select 1")?;
        through.push(t.elapsed());
        ensure!(
            psql(&creds.uri, "select count(*) from pgbench_branches")? == scale.to_string(),
            "the branch has the data"
        );
        client.delete_instance(&bid).await?;
        wait_for(&client, &bid, domain::State::Deleted, WAIT).await?;
    }
    let (d, p) = (median(&mut direct), median(&mut through));
    println!(
        "floor    pgbackrest restore + recovery + promotion + first query, by hand: median {}",
        ms(d)
    );
    println!(
        "pgplane  create --restore-from → Up → first query: median {}",
        ms(p)
    );
    println!(
        "ratio    {:.2}× the floor (goal ≤ 1.2×)",
        p.as_secs_f64() / d.as_secs_f64()
    );

    let port = client
        .get_instance(&id)
        .await?
        .connection
        .context("the instance's connection")?
        .port;
    archive_lag(&uri, &admin_socket(&data_dir, &stanza), port, 30).await
}

/// Archive lag under `pgbench -T seconds`: for every WAL segment finished
/// meanwhile, the time from its completion (the server moved past it) to
/// its arrival in the repository (`pg_stat_archiver.last_archived_wal`).
async fn archive_lag(uri: &str, socket: &Path, port: u16, seconds: u32) -> anyhow::Result<()> {
    let (admin, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={port} user=pgplane dbname=postgres",
            socket.display()
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    let mut load = Command::new("pgbench")
        .args(["-n", "-c", "4", "-j", "2", "-T", &seconds.to_string(), uri])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut finished: std::collections::BTreeMap<String, Instant> = Default::default();
    let mut lags = Vec::new();
    let (mut current, mut archived) = (String::new(), String::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(u64::from(seconds) + 60) {
        let row = admin
            .query_one(
                "select pg_walfile_name(pg_current_wal_lsn()), coalesce(last_archived_wal, '') \
                 from pg_stat_archiver",
                &[],
            )
            .await?;
        let (now_file, last): (String, String) = (row.get(0), row.get(1));
        let at = Instant::now();
        if now_file != current {
            if !current.is_empty() {
                finished.insert(current.clone(), at);
            }
            current = now_file;
        }
        if last != archived {
            archived = last;
            let done: Vec<String> = finished
                .keys()
                .filter(|s| s.as_str() <= archived.as_str())
                .cloned()
                .collect();
            for s in done {
                if let Some(t) = finished.remove(&s) {
                    lags.push(at.duration_since(t));
                }
            }
        }
        if load.try_wait()?.is_some() && finished.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = load.wait();
    ensure!(!lags.is_empty(), "no WAL segment finished under the load");
    lags.sort();
    let pct = |p: f64| lags[((lags.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "archive  lag under pgbench -c 4 for {seconds} s, {} segments: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        lags.len(),
        pct(0.5).as_secs_f64(),
        pct(0.99).as_secs_f64(),
        lags.last().map_or(0.0, Duration::as_secs_f64)
    );
    Ok(())
}

fn admin_socket(data_dir: &Path, stanza: &str) -> std::path::PathBuf {
    data_dir.join("instances").join(format!("{stanza}.sock"))
}

/// pgBackRest's restore of the stanza into a new directory of the
/// instance's user, then recovery (archive-get as that user) to promotion
/// and a first query. Returns the time it all took.
fn direct_restore(
    data_dir: &Path,
    stanza: &str,
    user: &str,
    conf: &Path,
    i: usize,
) -> anyhow::Result<Duration> {
    let target = data_dir.join(format!("direct-restore-{i}"));
    let socket = data_dir.join(format!("direct-restore-{i}.sock"));
    let spool = data_dir.join(format!("direct-restore-{i}.spool"));
    for d in [&target, &socket, &spool] {
        std::fs::create_dir_all(d)?;
        run(Command::new("chown").arg(user).arg(d))?;
        run(Command::new("chmod").arg("700").arg(d))?;
    }
    let port = free_port()?.to_string();
    let t = Instant::now();
    run(Command::new("runuser")
        .args(["-u", user, "--", "pgbackrest"])
        .args([
            &format!("--config={}", conf.display()),
            &format!("--stanza={stanza}"),
            &format!("--pg1-path={}", target.display()),
            &format!("--spool-path={}", spool.display()),
            &format!(
                "--recovery-option=restore_command=pgbackrest --config={} --stanza={stanza} --pg1-path={} archive-get %f \"%p\"",
                conf.display(),
                target.display()
            ),
            "--type=default",
            "--archive-mode=off",
            "restore",
        ]))?;
    let bindir = Command::new("pg_config").arg("--bindir").output()?;
    let postgres = Path::new(String::from_utf8(bindir.stdout)?.trim()).join("postgres");
    let mut server = Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(&postgres)
        .arg("-D")
        .arg(&target)
        .args(["-c", &format!("port={port}"), "-c"])
        .arg(format!("unix_socket_directories={}", socket.display()))
        .args(["-c", "listen_addresses="])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(
            data_dir.join(format!("direct-restore-{i}.log")),
        )?)
        .spawn()?;
    let until = Instant::now() + WAIT;
    loop {
        let out = Command::new("psql")
            .args(["-X", "-At", "-h"])
            .arg(&socket)
            .args([
                "-p",
                &port,
                "-U",
                "pgplane",
                "-d",
                "postgres",
                "-c",
                "select pg_is_in_recovery()",
            ])
            .output()?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "f" {
            break;
        }
        if let Some(status) = server.try_wait()? {
            let log = std::fs::read_to_string(data_dir.join(format!("direct-restore-{i}.log")))
                .unwrap_or_default();
            bail!("the restored server exited: {status}: {log}");
        }
        ensure!(
            Instant::now() < until,
            "the restored server did not come up"
        );
        std::thread::sleep(POLL);
    }
    let took = t.elapsed();
    // The postmaster, not runuser: a fast shutdown.
    let pid = std::fs::read_to_string(target.join("postmaster.pid"))?;
    let pid = pid
        .lines()
        .next()
        .context("postmaster.pid")?
        .trim()
        .to_owned();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let _ = server.wait();
    for d in [&target, &socket, &spool] {
        std::fs::remove_dir_all(d)?;
    }
    Ok(took)
}

/// Waits until the instance is Up, polling every 20 ms (not to take the
/// CPU the restore needs).
async fn up_gently(client: &Client, id: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let i = client.get_instance(id).await?;
        if i.state == domain::State::Up {
            return Ok(());
        }
        ensure!(
            i.state != domain::State::Error,
            "restore failed: {:?}",
            i.error
        );
        ensure!(start.elapsed() < WAIT, "restore not Up after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn history_len(client: &Client, name: &str) -> anyhow::Result<usize> {
    Ok(client.history(name).await?.items.len())
}

/// Waits for the outcome of a backup requested when the history had
/// `before` entries.
async fn backup_outcome(client: &Client, name: &str, before: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let h = client.history(name).await?;
        let outcome = h
            .items
            .iter()
            .skip(before)
            .find(|e| e.event == "BackedUp" || e.event == "BackupFailed");
        if let Some(e) = outcome {
            ensure!(e.event == "BackedUp", "backup failed: {:?}", e.detail);
            return Ok(());
        }
        ensure!(start.elapsed() < WAIT, "no backup outcome");
        // Gently: polling must not take the CPU the backup needs.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn backups_at_least(client: &Client, name: &str, n: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    while client.backups(name).await?.items.len() < n {
        ensure!(start.elapsed() < WAIT, "no backup of {name}");
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

fn psql(uri: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args(["-X", "-At", uri, "-c", sql])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
