//! pgplane's data plane.
//!
//! The conductor reads its data plane's queue, applies each event through a
//! [`Runtime`], and reports back on the status queue. Delivery is
//! at-least-once and handlers are idempotent. A message that cannot be
//! parsed, or that was delivered too often, is dead-lettered with its reason
//! and its instance is reported `Failed` with that reason — never retried
//! forever. A periodic resync re-observes every instance, so out-of-band
//! changes become visible.

pub mod local;
pub mod logs;
pub mod runtime;
pub mod simulated;

use std::sync::Arc;
use std::time::Duration;

use domain::{DataPlaneEvent, ReportKind, StatusReport};
use queue::{Message, Queues};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

pub use local::{LocalRuntime, LocalSettings};
pub use runtime::{
    Applied, BackupDone, Observation, Runtime, RuntimeError, Supervised, Supervision, SwitchedOver,
};
pub use simulated::SimulatedRuntime;

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_plane: String,
    /// How long a read message stays hidden; after a crash it is redelivered
    /// this long after it was read.
    pub visibility_timeout: Duration,
    /// How often every instance is re-observed.
    pub resync_every: Duration,
    /// Deliveries after which a message is dead-lettered.
    pub max_deliveries: i32,
    /// Messages read ahead and held (hidden) while waiting their turn: the
    /// window in which an event can be superseded by a newer one.
    pub batch: i32,
    /// Events applied at the same time.
    pub concurrency: usize,
    /// How often servers that should run are checked, and restarted when
    /// they crashed.
    pub supervise_every: Duration,
}

impl Settings {
    pub fn new(data_plane: &str) -> Settings {
        Settings {
            data_plane: data_plane.to_owned(),
            visibility_timeout: Duration::from_secs(60),
            resync_every: Duration::from_secs(30),
            max_deliveries: 5,
            batch: 256,
            concurrency: 8,
            supervise_every: Duration::from_secs(1),
        }
    }
}

/// How a handled message leaves the queue (acted on in [`settle`] only).
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Ack,
    DeadLetter(String),
    /// Leave it: it comes back after the visibility timeout.
    Retry,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Queue(#[from] queue::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Runs the conductor until `cancel`.
///
/// Up to `settings.batch` messages are read ahead and applied
/// `settings.concurrency` at a time; new ones are read as soon as the window
/// has room, so one slow instance never holds up the others. Events of one instance run one at a time, and an
/// event whose instance already has a newer generation read is acknowledged
/// as superseded instead of applied: every event carries the full desired
/// spec, so applying only the newest is the same as applying all in order.
pub async fn run<R: Runtime>(
    queues: Queues,
    runtime: Arc<R>,
    settings: Settings,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let queue_name = queues.create_data_plane_queue(&settings.data_plane).await?;
    let catalog = runtime.extension_catalog().await?;
    queues
        .register_data_plane_catalog(&settings.data_plane, &catalog)
        .await?;
    let mut wakeup = queues.listen(&queue_name).await?;
    tracing::info!(data_plane = %settings.data_plane, runtime = runtime.kind(), "conductor consuming");
    let newest = Arc::new(Newest::default());
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    // Resync, supervision and scheduled backups run beside the consume
    // loop, each at most once at a time, so none of them delays reading
    // events.
    let now = tokio::time::Instant::now();
    let mut resyncs = Periodic::new(settings.resync_every, now + settings.resync_every);
    let mut supervision = Periodic::new(settings.supervise_every, now + settings.supervise_every);
    let mut backups = Periodic::new(settings.supervise_every, now);
    while !cancel.is_cancelled() {
        while tasks.try_join_next().is_some() {}
        if backups.due() {
            let (queues, runtime) = (queues.clone(), runtime.clone());
            backups.start(
                async move { scheduled_backups(&queues, runtime.as_ref()).await }
                    .instrument(tracing::info_span!("scheduled_backups")),
            );
        }
        if resyncs.due() {
            let (queues, runtime) = (queues.clone(), runtime.clone());
            resyncs.start(
                async move { resync(&queues, runtime.as_ref()).await }
                    .instrument(tracing::info_span!("resync")),
            );
        }
        if supervision.due() {
            let (queues, runtime) = (queues.clone(), runtime.clone());
            supervision.start(
                async move { supervise(&queues, runtime.as_ref()).await }
                    .instrument(tracing::info_span!("supervise")),
            );
        }
        let free = settings.batch - tasks.len() as i32;
        let batch = if free > 0 {
            match queues
                .read(&queue_name, settings.visibility_timeout, free)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the data-plane queue failed; retrying");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        if batch.is_empty() {
            let now = tokio::time::Instant::now();
            let idle = resyncs
                .next
                .min(supervision.next)
                .saturating_duration_since(now)
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = wakeup.wait(idle), if free > 0 => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tokio::time::sleep(idle), if free <= 0 => {}
            }
            continue;
        }
        for msg in &batch {
            newest.saw(msg);
        }
        for msg in batch {
            let queues = queues.clone();
            let runtime = runtime.clone();
            let settings = settings.clone();
            let queue_name = queue_name.clone();
            let newest = newest.clone();
            let slots = slots.clone();
            let span = tracing::info_span!("event", msg_id = msg.msg_id);
            tasks.spawn(
                async move {
                    let _turn = newest.lock(&msg).await;
                    let _slot = slots.acquire().await.expect("semaphore never closed");
                    let outcome = if newest.is_superseded(&msg) {
                        tracing::debug!("event superseded by a newer generation");
                        Outcome::Ack
                    } else {
                        handle(&queues, runtime.as_ref(), &settings, &msg).await
                    };
                    settle(&queues, &queue_name, &msg, outcome).await;
                }
                .instrument(span),
            );
        }
    }
    while tasks.join_next().await.is_some() {}
    // A backup in progress is abandoned (the next schedule takes it again);
    // a resync or a supervision pass is let finish.
    backups.abort();
    for periodic in [resyncs, supervision] {
        periodic.stop().await;
    }
    tracing::info!("conductor stopped");
    Ok(())
}

/// Background work started every `every`, never twice at once.
struct Periodic {
    every: Duration,
    next: tokio::time::Instant,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Periodic {
    fn new(every: Duration, first: tokio::time::Instant) -> Periodic {
        Periodic {
            every,
            next: first,
            running: None,
        }
    }

    /// Whether it is time to start again and the last run has finished.
    fn due(&self) -> bool {
        tokio::time::Instant::now() >= self.next
            && self.running.as_ref().is_none_or(|r| r.is_finished())
    }

    fn start(&mut self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.next = tokio::time::Instant::now() + self.every;
        self.running = Some(tokio::spawn(work));
    }

    fn abort(&self) {
        if let Some(run) = &self.running {
            run.abort();
        }
    }

    /// Waits for a run in progress to finish.
    async fn stop(self) {
        if let Some(run) = self.running {
            let _ = run.await;
        }
    }
}

/// The newest generation read per instance, and a lock per instance so its
/// events run one at a time.
#[derive(Default)]
struct Newest {
    generations: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn message_key(m: &Message<serde_json::Value>) -> Option<(String, i64)> {
    let id = m.message.get("instanceId")?.as_str()?.to_owned();
    let generation = m.message.get("generation")?.as_i64()?;
    Some((id, generation))
}

impl Newest {
    fn saw(&self, m: &Message<serde_json::Value>) {
        if let Some((id, generation)) = message_key(m) {
            let mut g = self.generations.lock().expect("poisoned");
            let e = g.entry(id).or_insert(generation);
            *e = (*e).max(generation);
        }
    }

    fn is_superseded(&self, m: &Message<serde_json::Value>) -> bool {
        if m.message.get("kind").and_then(|k| k.as_str()) == Some("Backup") {
            return false; // a request, not a desired state
        }
        match message_key(m) {
            Some((id, generation)) => self
                .generations
                .lock()
                .expect("poisoned")
                .get(&id)
                .is_some_and(|newest| *newest > generation),
            None => false,
        }
    }

    async fn lock(
        &self,
        m: &Message<serde_json::Value>,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let (id, _) = message_key(m)?;
        let lock = self
            .locks
            .lock()
            .expect("poisoned")
            .entry(id)
            .or_default()
            .clone();
        Some(lock.lock_owned().await)
    }
}

/// Handles one message; never fails (the outcome says what to do with it).
pub async fn handle<R: Runtime + ?Sized>(
    queues: &Queues,
    runtime: &R,
    settings: &Settings,
    msg: &Message<serde_json::Value>,
) -> Outcome {
    let event: DataPlaneEvent = match serde_json::from_value(msg.message.clone()) {
        Ok(e) => e,
        Err(e) => {
            let reason = format!("unparseable data-plane event (message {}): {e}", msg.msg_id);
            return fail_dead(queues, &msg.message, reason).await;
        }
    };
    if msg.read_ct > settings.max_deliveries {
        let reason = format!(
            "{:?} for generation {} was delivered {} times without completing",
            event.kind, event.generation, msg.read_ct
        );
        return fail_dead(queues, &msg.message, reason).await;
    }
    tracing::info!(instance_id = %event.instance_id, generation = event.generation, kind = ?event.kind, "applying event");
    let request = match event.kind {
        domain::EventKind::Backup => Some(backup_report(runtime, event.instance_id).await),
        domain::EventKind::Switchover => Some(switchover_report(runtime, &event).await),
        _ => None,
    };
    if let Some(report) = request {
        return match queues.send_report(&report).await {
            Ok(_) => Outcome::Ack,
            Err(e) => {
                tracing::warn!(error = %e, kind = ?event.kind, "sending the report of a request failed; the request will be redelivered");
                Outcome::Retry
            }
        };
    }
    let report = match runtime.apply(&event).await {
        Ok(applied) => {
            if let Some(password) = &applied.password {
                if let Err(e) = queues.put_secret(event.instance_id, password).await {
                    tracing::warn!(error = %e, "storing the instance secret failed; will retry");
                    return Outcome::Retry;
                }
            }
            if let Some(passwords) = &applied.role_passwords {
                if let Err(e) = queues.put_role_secrets(event.instance_id, passwords).await {
                    tracing::warn!(error = %e, "storing the role secrets failed; will retry");
                    return Outcome::Retry;
                }
            }
            success_report(&event, applied)
        }
        Err(RuntimeError::NotConverged(why)) => {
            tracing::info!(instance_id = %event.instance_id, generation = event.generation, delivery = msg.read_ct, %why, "not converged yet; waiting for the redelivery");
            return Outcome::Retry;
        }
        Err(e) => {
            let error = agent::error_chain(&e);
            tracing::warn!(instance_id = %event.instance_id, %error, "event failed");
            StatusReport {
                error: Some(error),
                ..StatusReport::new(event.instance_id, event.generation, ReportKind::Failed)
            }
        }
    };
    match queues.send_report(&report).await {
        Ok(_) => Outcome::Ack,
        Err(e) => {
            tracing::warn!(error = %e, "sending the report failed; the event will be redelivered");
            Outcome::Retry
        }
    }
}

fn success_report(event: &DataPlaneEvent, applied: Applied) -> StatusReport {
    let prediction_note = match (event.kind, event.restart_predicted, applied.restarted) {
        (domain::EventKind::Update, true, false) => Some(
            "restart was predicted but Postgres did not need one (pending_restart was empty)"
                .to_owned(),
        ),
        (domain::EventKind::Update, false, true) => Some(
            "no restart was predicted but Postgres reported pending_restart; restarted".to_owned(),
        ),
        _ => None,
    };
    StatusReport {
        observed: applied.observed,
        connection: applied.connection,
        restarted: applied.restarted,
        prediction_note,
        backups: applied.backups,
        note: applied.note,
        ..StatusReport::new(event.instance_id, event.generation, applied.report)
    }
}

/// Takes a backup and says how it went, as a `Backup` report (which moves
/// no state: a failed backup leaves the instance serving).
pub async fn backup_report<R: Runtime + ?Sized>(runtime: &R, instance_id: Uuid) -> StatusReport {
    let (generation, note, error, backups) = match runtime.backup(instance_id).await {
        Ok(done) => (done.generation, Some(done.note), None, Some(done.catalog)),
        Err(e) => {
            let error = agent::error_chain(&e);
            tracing::warn!(%instance_id, %error, "backup failed");
            (0, None, Some(format!("backup failed: {error}")), None)
        }
    };
    StatusReport {
        error,
        note,
        backups,
        ..StatusReport::new(instance_id, generation, ReportKind::Backup)
    }
}

/// Switches over as `event` asks and says how it went, as a
/// `SwitchedOver` report (which moves no state: a refused switchover
/// leaves the primary as it was).
pub async fn switchover_report<R: Runtime + ?Sized>(
    runtime: &R,
    event: &DataPlaneEvent,
) -> StatusReport {
    let id = event.instance_id;
    match runtime.switchover(id, event.switchover_to).await {
        Ok(done) => StatusReport {
            note: Some(done.note),
            observed: Some(done.observed),
            connection: Some(done.connection),
            ..StatusReport::new(id, done.generation, ReportKind::SwitchedOver)
        },
        Err(e) => {
            let error = agent::error_chain(&e);
            tracing::warn!(instance_id = %id, %error, "switchover refused");
            StatusReport {
                error: Some(format!("switchover failed: {error}")),
                ..StatusReport::new(id, 0, ReportKind::SwitchedOver)
            }
        }
    }
}

/// Takes the backups that are due, one at a time, reporting each.
pub async fn scheduled_backups<R: Runtime + ?Sized>(queues: &Queues, runtime: &R) {
    for id in runtime.due_backups().await {
        let report = backup_report(runtime, id).await;
        if let Err(e) = queues.send_report(&report).await {
            tracing::warn!(error = %e, "sending a backup report failed");
        }
    }
}

/// Dead-letters a message and, when its instance can be told, reports the
/// instance `Failed` with the reason.
async fn fail_dead(queues: &Queues, raw: &serde_json::Value, reason: String) -> Outcome {
    let instance_id = raw
        .get("instanceId")
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok());
    if let Some(instance_id) = instance_id {
        let generation = raw.get("generation").and_then(|g| g.as_i64()).unwrap_or(0);
        let report = StatusReport {
            error: Some(reason.clone()),
            ..StatusReport::new(instance_id, generation, ReportKind::Failed)
        };
        if let Err(e) = queues.send_report(&report).await {
            tracing::warn!(error = %e, "reporting a dead-lettered event failed; will retry");
            return Outcome::Retry;
        }
    }
    Outcome::DeadLetter(reason)
}

async fn settle(queues: &Queues, queue: &str, msg: &Message<serde_json::Value>, outcome: Outcome) {
    let result = match outcome {
        Outcome::Ack => queues.delete(queue, msg.msg_id).await,
        Outcome::DeadLetter(reason) => queues.dead_letter(queue, msg, &reason).await,
        Outcome::Retry => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, msg_id = msg.msg_id, "settling a message failed; it will be redelivered");
    }
}

/// Restarts crashed servers (or gives up on them) and reports what it did:
/// `Recovered` with a note for the history, or `Failed` with why.
pub async fn supervise<R: Runtime + ?Sized>(queues: &Queues, runtime: &R) {
    for s in runtime.supervise().await {
        let (kind, observed, error, note, connection) = match s.outcome {
            Supervision::Restarted { note, observed } => (
                ReportKind::Recovered,
                Some(*observed),
                None,
                Some(note),
                None,
            ),
            Supervision::FailedOver {
                note,
                observed,
                connection,
            } => (
                ReportKind::FailedOver,
                Some(*observed),
                None,
                Some(note),
                Some(connection),
            ),
            Supervision::GaveUp { reason } => (ReportKind::Failed, None, Some(reason), None, None),
        };
        let report = StatusReport {
            observed,
            error,
            note,
            connection,
            ..StatusReport::new(s.instance_id, s.generation, kind)
        };
        if let Err(e) = queues.send_report(&report).await {
            tracing::warn!(error = %e, "sending a supervision report failed");
        }
    }
}

/// Re-observes every instance and reports what it saw.
pub async fn resync<R: Runtime + ?Sized>(queues: &Queues, runtime: &R) {
    for obs in runtime.observe_all().await {
        if let Some(log) = &obs.log {
            if let Err(e) = queues.put_log(obs.instance_id, log).await {
                tracing::warn!(error = %e, "storing a server log chunk failed");
            }
        }
        let report = StatusReport {
            observed: Some(obs.observed),
            activity: obs.activity,
            ..StatusReport::new(obs.instance_id, obs.generation, ReportKind::Observed)
        };
        if let Err(e) = queues.send_report(&report).await {
            tracing::warn!(error = %e, "sending an observation failed");
        }
    }
}
