//! Declaring many databases with extensions on one instance through
//! pgplane (API request → `Up` at the new generation) next to the same SQL
//! run directly with psql over the instance's socket.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use domain::{Database, Extension, InstanceSpec};

use crate::harness::{ms, scratch_dir};
use crate::scenarios::{start_up, wait_for};

const WAIT: Duration = Duration::from_secs(1800);
const EXTENSIONS: [&str; 3] = ["hstore", "citext", "pg_trgm"];

pub async fn databases(count: usize) -> anyhow::Result<()> {
    println!(
        "== {count} databases with {} extensions each ({}) on one instance",
        EXTENSIONS.len(),
        EXTENSIONS.join(", ")
    );
    let dir = scratch_dir()?;
    let (_up, client) = start_up(dir.path()).await?;
    let created = client
        .create_instance(&api::CreateInstance {
            name: "bench".into(),
            spec: InstanceSpec::default(),
            data_plane: None,
            owner: None,
        })
        .await?;
    let id = created.id.to_string();
    let up = wait_for(&client, &id, domain::State::Up, Duration::from_secs(120)).await?;
    // Both runs start from a quiet server: the first backup taken and the
    // WAL archived (every CREATE DATABASE writes its template to WAL).
    crate::backup::backups_at_least(&client, "bench", 1).await?;

    // The floor: the same statements, one psql session, as pgplane's own
    // role over the socket.
    let mut script = String::new();
    for i in 0..count {
        script.push_str(&format!("CREATE DATABASE floor_{i};\n"));
    }
    for i in 0..count {
        script.push_str(&format!("\\c floor_{i}\n"));
        for e in EXTENSIONS {
            script.push_str(&format!("CREATE EXTENSION {e};\n"));
        }
    }
    let port = up.connection.as_ref().context("no connection")?.port;
    let socket = dir
        .path()
        .join("up/instances")
        .join(format!("i-{}.sock", &created.id.simple().to_string()[..12]));
    archived(&socket, port)?;
    let t = Instant::now();
    psql_script(&socket, port, &script)?;
    let floor = t.elapsed();
    archived(&socket, port)?;

    let mut spec = up.spec.clone();
    spec.databases = (0..count)
        .map(|i| Database {
            extensions: EXTENSIONS.iter().map(|e| Extension::new(*e)).collect(),
            ..Database::new(format!("db_{i}"), "postgres")
        })
        .collect();
    let t = Instant::now();
    client
        .update_instance(
            "bench",
            &api::UpdateInstance {
                spec,
                expected_generation: Some(up.generation),
                owner: None,
            },
        )
        .await?;
    let done = wait_for(&client, &id, domain::State::Up, WAIT).await?;
    let through = t.elapsed();
    let observed = done
        .observed
        .and_then(|o| o.databases)
        .map_or(0, |d| d.len());
    ensure!(
        observed == count,
        "{observed} of {count} databases observed"
    );

    println!(
        "floor    psql: {count} × CREATE DATABASE, then {} × CREATE EXTENSION in each: {}",
        EXTENSIONS.len(),
        ms(floor)
    );
    println!(
        "pgplane  PUT spec with {count} databases → Up at the new generation (observed back): {}",
        ms(through)
    );
    println!(
        "ratio    {:.2}× the floor",
        through.as_secs_f64() / floor.as_secs_f64()
    );
    Ok(())
}

/// Switches to a new WAL segment and waits until the one before is archived.
fn archived(socket: &Path, port: u16) -> anyhow::Result<()> {
    let query = |sql: &str| -> anyhow::Result<String> {
        let out = Command::new("psql")
            .args(["-X", "-At", "-h"])
            .arg(socket)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "pgplane",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()?;
        ensure!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let segment = query("SELECT pg_walfile_name(pg_switch_wal())")?;
    let start = Instant::now();
    while query("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")? < segment {
        ensure!(start.elapsed() < WAIT, "WAL segment {segment} not archived");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn psql_script(socket: &Path, port: u16, script: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(socket)
        .args(["-p", &port.to_string(), "-U", "pgplane", "-d", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("psql stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
