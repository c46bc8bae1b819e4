//! Event-stream fan-out: many clients on `GET /api/v1/events` (the stream
//! every open console page and every `--wait` listens to) while instances
//! change state, on the simulated runtime. Delivery delay is the time from
//! the change's commit (`updatedAt`, the control plane's clock, the same
//! machine's) to its arrival at each client. The floor is one client on the
//! same control plane in the same run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use api::{Client, CreateInstance, InstanceEvent, StreamEvent};
use domain::{InstanceSpec, State};
use tokio::sync::watch;
use uuid::Uuid;

use crate::harness::*;

/// Where each instance stands, as the driver's own stream last said.
type Positions = Arc<HashMap<Uuid, watch::Sender<(State, i64, i64)>>>;

/// What an instance must reach for a client to be done: (generation).
type Finals = watch::Receiver<Option<Arc<HashMap<Uuid, i64>>>>;

pub async fn fanout(clients: usize, changes: usize, instances: usize) -> anyhow::Result<()> {
    println!(
        "== event-stream fan-out: {clients} clients, {changes} state changes over {instances} instances (SIMULATED runtime)"
    );
    let dir = scratch_dir()?;
    let SimulatedPlane {
        server,
        _conductor,
        client,
        db,
        ..
    } = SimulatedPlane::start(dir.path()).await?;
    let created = create_instances(&client, instances).await?;
    let positions = follow(&client, &created).await?;
    let ids: Vec<Uuid> = created.iter().map(|i| i.id).collect();
    for id in &ids {
        reach(&positions, *id, State::Up, 1, Duration::from_secs(120)).await?;
    }

    let floor_changes = (changes / 5).max(4 * instances);
    let (floor, _) = measure(&client, &positions, &ids, 1, floor_changes, &server).await?;
    let (rss_idle, _) = server.memory_kib()?;
    let (fan, rss) = measure(&client, &positions, &ids, clients, changes, &server).await?;
    let (_, hwm) = server.memory_kib()?;
    println!(
        "floor:   1 client,  {} deliveries: p50 {} p99 {} (the stream's poller looks every 300 ms)",
        floor.count,
        ms(floor.p50),
        ms(floor.p99)
    );
    println!(
        "fan-out: {clients} clients, {} deliveries ({} per client): p50 {} p99 {}",
        fan.count,
        fan.count / clients.max(1),
        ms(fan.p50),
        ms(fan.p99)
    );
    println!(
        "control-plane RSS: {} MiB before the clients, {} MiB with {clients} streams open, peak {} MiB",
        rss_idle / 1024,
        rss / 1024,
        hwm / 1024
    );
    drop(server);
    db.stop().await?;
    Ok(())
}

async fn create_instances(client: &Client, n: usize) -> anyhow::Result<Vec<api::Instance>> {
    let mut created = Vec::with_capacity(n);
    for i in 0..n {
        let instance = client
            .create_instance(&CreateInstance {
                name: format!("fan-{i}"),
                spec: InstanceSpec::default(),
                data_plane: None,
                owner: None,
            })
            .await?;
        created.push(instance);
    }
    Ok(created)
}

/// The driver's own stream, from before the first instance was created:
/// where each instance stands.
async fn follow(client: &Client, created: &[api::Instance]) -> anyhow::Result<Positions> {
    let positions: Positions = Arc::new(
        created
            .iter()
            .map(|i| (i.id, watch::channel((State::Submitted, 0, 0)).0))
            .collect(),
    );
    let since = created.first().context("no instances")?.created_at;
    let mut stream = client.instance_events(Some(since)).await?;
    let p = positions.clone();
    tokio::spawn(async move {
        while let Ok(Some(event)) = stream.next().await {
            if let StreamEvent::Instance(e) = event {
                if let Some(tx) = p.get(&e.id) {
                    tx.send_replace((e.state, e.generation, e.observed_generation));
                }
            }
        }
    });
    Ok(positions)
}

/// Waits until `id` is in `state` with the data plane caught up to `generation`.
async fn reach(
    positions: &Positions,
    id: Uuid,
    state: State,
    generation: i64,
    deadline: Duration,
) -> anyhow::Result<()> {
    let mut rx = positions.get(&id).context("unknown instance")?.subscribe();
    tokio::time::timeout(
        deadline,
        rx.wait_for(|(s, g, o)| *s == state && *g >= generation && *o >= generation),
    )
    .await
    .with_context(|| format!("instance {id} did not reach {state} at generation {generation}"))??;
    Ok(())
}

struct Latencies {
    count: usize,
    p50: Duration,
    p99: Duration,
}

/// Opens `clients` streams, makes about `changes` state changes (stop and
/// start cycles, four changes each), and returns the delivery delays and
/// the server's RSS (KiB) while the streams were open.
async fn measure(
    client: &Client,
    positions: &Positions,
    ids: &[Uuid],
    clients: usize,
    changes: usize,
    server: &Pgplane,
) -> anyhow::Result<(Latencies, u64)> {
    let (finals_tx, finals_rx) = watch::channel(None);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(clients);
    let mut listeners = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let client = client.clone();
        let finals = finals_rx.clone();
        let ready = ready_tx.clone();
        listeners.spawn(async move { listen(client, finals, ready).await });
    }
    for _ in 0..clients {
        ready_rx
            .recv()
            .await
            .context("a client could not open its stream")?;
    }
    let (rss, _) = server.memory_kib()?;
    let cycles = changes.div_ceil(4 * ids.len()).max(1);
    let mut drivers = tokio::task::JoinSet::new();
    for id in ids {
        let client = client.clone();
        let positions = positions.clone();
        let id = *id;
        drivers.spawn(async move { cycle(&client, &positions, id, cycles).await });
    }
    let mut finals = HashMap::new();
    while let Some(done) = drivers.join_next().await {
        let (id, generation) = done??;
        finals.insert(id, generation);
    }
    finals_tx.send(Some(Arc::new(finals)))?;
    let mut delays = Vec::new();
    while let Some(done) = listeners.join_next().await {
        delays.extend(done??);
    }
    delays.sort();
    if delays.is_empty() {
        bail!("no event was delivered");
    }
    let at = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    Ok((
        Latencies {
            count: delays.len(),
            p50: at(0.50),
            p99: at(0.99),
        },
        rss,
    ))
}

/// Stops and starts `id` `cycles` times; returns its last generation.
async fn cycle(
    client: &Client,
    positions: &Positions,
    id: Uuid,
    cycles: usize,
) -> anyhow::Result<(Uuid, i64)> {
    let name = id.to_string();
    let mut generation = 0;
    for _ in 0..cycles {
        for (action, settled) in [("stop", State::Stopped), ("start", State::Up)] {
            generation = client.instance_action(&name, action).await?.generation;
            reach(positions, id, settled, generation, Duration::from_secs(120)).await?;
        }
    }
    Ok((id, generation))
}

/// One client: its delivery delays, once every instance reached its final
/// generation in what it was sent.
async fn listen(
    client: Client,
    mut finals: Finals,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Vec<Duration>> {
    let mut stream = client.instance_events(None).await?;
    let mut delays = Vec::new();
    let mut seen: HashMap<Uuid, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = finals
            .borrow()
            .as_ref()
            .is_some_and(|f| f.iter().all(|(id, g)| seen.get(id).is_some_and(|s| s >= g)));
        if done {
            return Ok(delays);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            changed = finals.changed() => changed?,
            event = tokio::time::timeout(left, stream.next()) => {
                match event.context("a client waited 5 minutes")?? {
                    Some(StreamEvent::Hello) => ready.send(()).await?,
                    Some(StreamEvent::Instance(e)) => {
                        delays.push(delay(&e));
                        if e.state == State::Up && e.observed_generation >= e.generation {
                            seen.insert(e.id, e.generation);
                        }
                    }
                    Some(StreamEvent::Resync) => bail!("a client fell behind (resync)"),
                    Some(StreamEvent::Other(_)) => {}
                    None => bail!("the stream ended"),
                }
            }
        }
    }
}

/// From the change's commit to now.
fn delay(e: &InstanceEvent) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    Duration::from_micros((now - e.updated_at.timestamp_micros()).max(0) as u64)
}
