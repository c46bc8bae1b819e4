//! The three benchmarks.

use std::path::Path;
use std::time::{Duration, Instant};

use agent::{Agent, InstanceConfig, PostgresBinaries, RunAs, Secret, Template};
use anyhow::{bail, Context};
use api::{Client, CreateInstance, UpdateInstance};
use domain::{InstanceSpec, State};
use futures::stream::{self, StreamExt};

use crate::harness::*;

pub(crate) const POLL: Duration = Duration::from_millis(2);

pub(crate) async fn start_up(dir: &Path) -> anyhow::Result<(Pgplane, Client)> {
    let data_dir = dir.join("up");
    let listen = format!("127.0.0.1:{}", free_port()?);
    let up = Pgplane::spawn(
        &[
            "up",
            "--data-dir",
            data_dir.to_str().context("utf-8 path")?,
            "--listen",
            &listen,
        ],
        &[],
        &dir.join("up.log"),
        Some("Press Ctrl-C"),
    )?;
    let (endpoint, token) = env_file(&data_dir)?;
    Ok((up, Client::new(&endpoint, &token)))
}

/// Polls until the instance is in `state` at its current generation.
pub(crate) async fn wait_for(
    client: &Client,
    id: &str,
    state: State,
    deadline: Duration,
) -> anyhow::Result<api::Instance> {
    let start = Instant::now();
    loop {
        let i = client.get_instance(id).await?;
        if i.state == state && i.observed_generation >= i.generation {
            return Ok(i);
        }
        if i.state == State::Error {
            bail!("instance {} failed: {:?}", i.name, i.error);
        }
        if start.elapsed() > deadline {
            bail!("instance {} still {} after {deadline:?}", i.name, i.state);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn first_query(host: &str, port: u16, password: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host={host} port={port} user=postgres password={password} dbname=postgres"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    let one: i32 = client.query_one("select 1", &[]).await?.get(0);
    anyhow::ensure!(one == 1);
    Ok(())
}

fn create_request(name: &str) -> CreateInstance {
    CreateInstance {
        name: name.to_owned(),
        spec: InstanceSpec::default(),
        data_plane: None,
        owner: None,
    }
}

pub async fn create(runs: usize) -> anyhow::Result<()> {
    println!("== create → connectable ({runs} runs, median)");
    let dir = scratch_dir()?;

    // The floor: what the agent does for one instance, without the pipeline.
    let bins = PostgresBinaries::discover()?;
    let run_as = RunAs::for_this_process("postgres")?;
    let template = Template::ensure(&dir.path().join("floor-template"), &bins, &run_as).await?;
    let mut floor = Vec::new();
    for i in 0..runs {
        let agent = Agent::new(
            bins.clone(),
            run_as.clone(),
            InstanceConfig::new(dir.path().join(format!("floor-{i}")), free_port()?),
        );
        let password = Secret::generate();
        let t0 = Instant::now();
        agent.create(&template, &password).await?;
        let c = agent.connection();
        first_query(&c.host, c.port, password.expose()).await?;
        floor.push(t0.elapsed());
        agent.delete().await?;
    }

    let (_up, client) = start_up(dir.path()).await?;
    // Warm-up (template and connections).
    let warm = client.create_instance(&create_request("warmup")).await?;
    wait_for(
        &client,
        &warm.id.to_string(),
        State::Up,
        Duration::from_secs(60),
    )
    .await?;
    let mut pipeline = Vec::new();
    for i in 0..runs {
        let t0 = Instant::now();
        let created = client
            .create_instance(&create_request(&format!("bench-{i}")))
            .await?;
        let id = created.id.to_string();
        wait_for(&client, &id, State::Up, Duration::from_secs(60)).await?;
        let creds = client.credentials(&id).await?;
        first_query(&creds.host, creds.port, &creds.password).await?;
        pipeline.push(t0.elapsed());
        client.delete_instance(&id).await?;
        wait_for(&client, &id, State::Deleted, Duration::from_secs(60)).await?;
    }
    let f = median(&mut floor);
    let p = median(&mut pipeline);
    println!(
        "floor    (template copy + spawn + password + first query): median {}",
        ms(f)
    );
    println!(
        "pipeline (API → FSM → PGMQ → conductor → agent → report → Up → first query): median {}",
        ms(p)
    );
    println!(
        "ratio    {:.2}× the floor (target ≤ 2×)",
        p.as_secs_f64() / f.as_secs_f64()
    );
    Ok(())
}

pub async fn throughput(updates: usize, instances: usize) -> anyhow::Result<()> {
    println!("== event throughput ({updates} reload-only updates across {instances} instances)");
    let dir = scratch_dir()?;
    let (_up, client) = start_up(dir.path()).await?;

    // Raw PGMQ on the same database: send (one transaction each) → read → delete.
    let pool = reconciler::connect(&state_db_url(&dir.path().join("up"))?).await?;
    let queues = queue::Queues::new(pool.clone()).await;
    queues.create_queue("bench_raw").await?;
    let n = updates;
    let t0 = Instant::now();
    let producer = {
        let queues = queues.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..n {
                let mut conn = pool.acquire().await?;
                queues
                    .send_json(&mut conn, "bench_raw", &serde_json::json!({"i": i}))
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    let mut done = 0;
    while done < n {
        let batch = queues
            .read("bench_raw", Duration::from_secs(30), 32)
            .await?;
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for m in batch {
            queues.delete("bench_raw", m.msg_id).await?;
            done += 1;
        }
    }
    producer.await??;
    let raw = t0.elapsed();
    let raw_rate = n as f64 / raw.as_secs_f64();

    // The pipeline with real instances.
    let ids: Vec<String> = stream::iter(0..instances)
        .map(|i| {
            let client = client.clone();
            async move {
                let c = client
                    .create_instance(&create_request(&format!("tp-{i}")))
                    .await?;
                wait_for(
                    &client,
                    &c.id.to_string(),
                    State::Up,
                    Duration::from_secs(300),
                )
                .await?;
                anyhow::Ok(c.id.to_string())
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let per_instance = updates / instances;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..per_instance {
                let mut spec = InstanceSpec::default();
                spec.config
                    .insert("work_mem".into(), format!("{}kB", 4096 + 64 * (round + 1)));
                client
                    .update_instance(
                        &id,
                        &UpdateInstance {
                            spec,
                            expected_generation: None,
                            owner: None,
                        },
                    )
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let accepted = t0.elapsed();
    for id in ids.iter() {
        wait_for(&client, id, State::Up, Duration::from_secs(600)).await?;
    }
    let all_up = t0.elapsed();
    let total = per_instance * instances;
    let rate = total as f64 / all_up.as_secs_f64();
    println!(
        "raw PGMQ send→read→delete: {n} messages in {} = {raw_rate:.0} msg/s",
        ms(raw)
    );
    println!(
        "pipeline: {total} updates accepted in {}, all {instances} instances Up at their last generation after {} = {rate:.0} events/s",
        ms(accepted),
        ms(all_up)
    );
    println!(
        "ratio    {:.0}% of raw (target ≥ 30%)",
        100.0 * rate / raw_rate
    );
    if let Ok(keep) = std::env::var("PGPLANE_BENCH_KEEP_LOG") {
        std::fs::copy(dir.path().join("up.log"), keep)?;
    }
    Ok(())
}

pub async fn memory(instances: usize) -> anyhow::Result<()> {
    println!("== control-plane memory with {instances} instances (SIMULATED runtime: no Postgres per instance)");
    let dir = scratch_dir()?;
    let SimulatedPlane {
        server,
        _conductor,
        client,
        db,
        ..
    } = SimulatedPlane::start(dir.path()).await?;
    let (idle_rss, _) = server.memory_kib()?;
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..instances)
        .map(|i| {
            let client = client.clone();
            async move {
                client
                    .create_instance(&create_request(&format!("m-{i}")))
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let created = t0.elapsed();
    none_submitted(&client, Duration::from_secs(600)).await?;
    let all_up = t0.elapsed();
    let (rss_after, _) = server.memory_kib()?;
    let listed = client.list_instances(None).await?.items.len();
    let (rss_list, hwm) = server.memory_kib()?;
    println!(
        "created {instances} instances via the API in {}, all Up after {}",
        ms(created),
        ms(all_up)
    );
    println!("control-plane RSS: idle {} MiB; with {instances} instances {} MiB; after listing all {listed} {} MiB; peak {} MiB",
        idle_rss / 1024, rss_after / 1024, rss_list / 1024, hwm / 1024);
    drop(server);
    db.stop().await?;
    Ok(())
}
