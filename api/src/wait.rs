//! Waiting until the data plane has acted on a command: following the
//! instance on the control plane's event stream where it offers one (and the
//! caller asks for it), by polling otherwise, riding out the control plane's
//! brief unavailability until the deadline.
//!
//! Whether the wait is over is a pure function ([`progress`]) of the instance
//! and the generation the command produced; [`until`] only fetches and tells
//! its [`Observer`] what it sees.

use std::future::Future;
use std::time::Duration;

use domain::State;
use tokio::time::Instant;

use crate::{Client, ClientError, Instance, StreamEvent};

/// What a wait waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Running or stopped, at the command's generation.
    Settled,
    /// Gone for good (`delete`): deleted, or no longer found.
    Deleted,
}

/// Where an instance stands with respect to a [`Goal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Pending,
    Done,
    /// The data plane reported a failure (the instance's `error`).
    Failed(String),
    /// Deleted while waiting for something else.
    Gone,
}

/// Where `inst` stands with respect to `goal` for the command that produced
/// `generation`.
pub fn progress(inst: &Instance, generation: i64, goal: Goal) -> Progress {
    let caught_up = inst.observed_generation >= generation;
    match (inst.state, goal) {
        (State::Error, _) => Progress::Failed(
            inst.error
                .clone()
                .unwrap_or_else(|| "no reason reported".to_owned()),
        ),
        (State::Deleted, Goal::Deleted) => Progress::Done,
        (State::Deleted, Goal::Settled) => Progress::Gone,
        (State::Up | State::Stopped, Goal::Settled) if caught_up => Progress::Done,
        (
            State::Submitted
            | State::Up
            | State::Configuring
            | State::Restarting
            | State::Stopping
            | State::Stopped
            | State::Starting
            | State::Deleting,
            Goal::Settled | Goal::Deleted,
        ) => Progress::Pending,
    }
}

/// How long a wait stays silent before it says it is still waiting.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// How often the instance is fetched while following the event stream
/// anyway, in case the stream goes quiet without ending.
pub const STREAM_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The pauses between fetches while polling: `first`, doubling up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poll {
    pub first: Duration,
    pub max: Duration,
}

impl Poll {
    /// The same pause every time.
    pub const fn every(interval: Duration) -> Poll {
        Poll {
            first: interval,
            max: interval,
        }
    }

    /// `first`, doubling up to `max`: quick changes return quickly and long
    /// ones do not hammer the API.
    pub const fn backoff(first: Duration, max: Duration) -> Poll {
        Poll { first, max }
    }
}

/// What a wait waits for, for how long, and how it follows the instance.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub goal: Goal,
    /// From the start of the wait; then [`WaitError::Timeout`].
    pub timeout: Duration,
    /// Follows the event stream, polling only when there is none or it
    /// breaks; `false` polls from the start.
    pub follow_events: bool,
    pub poll: Poll,
}

/// Told what a wait sees as it goes: the CLI prints it, the Terraform
/// provider logs it.
pub trait Observer {
    /// The instance went from `from` to `to.state`, `elapsed` into the wait.
    fn changed(&mut self, from: State, to: &Instance, elapsed: Duration);
    /// Nothing was said for [`HEARTBEAT`] and the wait goes on: `inst` has
    /// yet to reach `goal` at `generation`.
    fn waiting(&mut self, inst: &Instance, generation: i64, goal: Goal, elapsed: Duration);
    /// Fetching the instance failed in a way worth retrying; said once for
    /// each new error, not for each retry.
    fn retrying(&mut self, error: &ClientError);
}

/// Why a wait ended without reaching its goal; each carries the instance
/// as last seen.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The data plane reported a failure (the instance is in `Error`).
    #[error("instance {} failed: {reason}", inst.name)]
    Failed { inst: Box<Instance>, reason: String },
    /// Deleted (or no longer found) while waiting for it to settle.
    #[error("instance {} was deleted while waiting", inst.name)]
    Gone { inst: Box<Instance> },
    /// [`Options::timeout`] passed first.
    #[error("timed out after {after:?} waiting for instance {}", inst.name)]
    Timeout {
        inst: Box<Instance>,
        after: Duration,
        /// The generation waited for.
        generation: i64,
        /// The last transient error, when fetching was failing at the end.
        last_error: Option<String>,
    },
    /// The cancellation future completed first.
    #[error("the wait for instance {} was cancelled", inst.name)]
    Cancelled { inst: Box<Instance> },
    /// The control plane refused a fetch in a way not worth retrying.
    #[error("waiting for instance {}: {error}", inst.name)]
    Api {
        inst: Box<Instance>,
        #[source]
        error: ClientError,
    },
}

impl WaitError {
    /// The instance as last seen.
    pub fn instance(&self) -> &Instance {
        match self {
            WaitError::Failed { inst, .. }
            | WaitError::Gone { inst }
            | WaitError::Timeout { inst, .. }
            | WaitError::Cancelled { inst }
            | WaitError::Api { inst, .. } => inst,
        }
    }
}

/// Waits until `started` (what the command returned) reaches
/// `options.goal` at its generation, the timeout passes, or `cancel`
/// completes. Follows the instance by id, so a new instance that takes the
/// name meanwhile is not mistaken for this one; an instance no longer found
/// counts as deleted. HTTP 503, a proxy's 502–504 and an unreachable control
/// plane are retried until the deadline.
pub async fn until<O: Observer>(
    client: &Client,
    started: Instance,
    options: Options,
    observer: &mut O,
    cancel: impl Future<Output = ()>,
) -> Result<Instance, WaitError> {
    let mut watch = Watch::new(client, started, options, observer);
    if let Some(verdict) = watch.verdict() {
        return verdict;
    }
    let outcome = tokio::select! {
        biased;
        () = cancel => None,
        outcome = watch.run() => Some(outcome),
    };
    outcome.unwrap_or_else(|| Err(watch.cancelled()))
}

/// One wait: what it waits for and the instance as last seen.
struct Watch<'a, O> {
    client: &'a Client,
    observer: &'a mut O,
    options: Options,
    started_at: Instant,
    /// When the wait last said something.
    last_said: Instant,
    deadline: Instant,
    generation: i64,
    id: String,
    current: Instance,
    /// The last transient error, while requests are failing.
    last_error: Option<String>,
}

impl<'a, O: Observer> Watch<'a, O> {
    fn new(client: &'a Client, started: Instance, options: Options, observer: &'a mut O) -> Self {
        let now = Instant::now();
        Watch {
            client,
            observer,
            options,
            started_at: now,
            last_said: now,
            deadline: now + options.timeout,
            generation: started.generation,
            id: started.id.to_string(),
            current: started,
            last_error: None,
        }
    }

    /// Follows the event stream if asked and there is one, then polls.
    async fn run(&mut self) -> Result<Instance, WaitError> {
        if self.options.follow_events {
            if let Some(done) = self.follow_events().await? {
                return Ok(done);
            }
        }
        self.poll().await
    }

    /// The wait's outcome, once there is one.
    fn verdict(&self) -> Option<Result<Instance, WaitError>> {
        let inst = || Box::new(self.current.clone());
        match progress(&self.current, self.generation, self.options.goal) {
            Progress::Done => Some(Ok(self.current.clone())),
            Progress::Failed(reason) => Some(Err(WaitError::Failed {
                inst: inst(),
                reason,
            })),
            Progress::Gone => Some(Err(WaitError::Gone { inst: inst() })),
            Progress::Pending => None,
        }
    }

    fn timed_out(&self) -> WaitError {
        WaitError::Timeout {
            inst: Box::new(self.current.clone()),
            after: self.options.timeout,
            generation: self.generation,
            last_error: self.last_error.clone(),
        }
    }

    fn cancelled(self) -> WaitError {
        WaitError::Cancelled {
            inst: Box::new(self.current),
        }
    }

    /// Takes `seen` as the instance now, telling a change of state.
    fn observe(&mut self, seen: Instance) {
        if seen.state != self.current.state {
            self.observer
                .changed(self.current.state, &seen, self.started_at.elapsed());
            self.last_said = Instant::now();
        }
        self.current = seen;
    }

    /// Says the wait goes on, when it has been silent for [`HEARTBEAT`].
    fn heartbeat(&mut self) {
        if self.last_said.elapsed() >= HEARTBEAT && self.verdict().is_none() {
            self.observer.waiting(
                &self.current,
                self.generation,
                self.options.goal,
                self.started_at.elapsed(),
            );
            self.last_said = Instant::now();
        }
    }

    /// Fetches the instance; a transient failure (or the deadline passing
    /// mid-request) leaves it as last seen.
    async fn fetch(&mut self) -> Result<(), WaitError> {
        let fetched =
            tokio::time::timeout_at(self.deadline, self.client.get_instance(&self.id)).await;
        match fetched {
            Ok(Ok(inst)) => {
                self.last_error = None;
                self.observe(inst);
            }
            Ok(Err(ClientError::Api { status: 404, .. })) => {
                self.last_error = None;
                let mut gone = self.current.clone();
                gone.state = State::Deleted;
                self.observe(gone);
            }
            Ok(Err(e)) if is_transient(&e) => {
                let message = e.to_string();
                if self.last_error.as_deref() != Some(&message) {
                    self.observer.retrying(&e);
                }
                self.last_error = Some(message);
            }
            Ok(Err(error)) => {
                return Err(WaitError::Api {
                    inst: Box::new(self.current.clone()),
                    error,
                })
            }
            Err(_elapsed) => {}
        }
        Ok(())
    }

    /// Follows the event stream until the wait is over (`Some`), or returns
    /// `None` when there is no stream (an older control plane answers 404)
    /// or it broke, for polling to go on.
    async fn follow_events(&mut self) -> Result<Option<Instance>, WaitError> {
        let since = self.current.updated_at;
        let opened =
            tokio::time::timeout_at(self.deadline, self.client.instance_events(Some(since))).await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "no event stream; polling");
                return Ok(None);
            }
            Err(_elapsed) => return Ok(None),
        };
        tracing::debug!("following the event stream");
        let mut next_check = Instant::now() + STREAM_CHECK_INTERVAL;
        loop {
            if let Some(verdict) = self.verdict() {
                return match verdict {
                    // The event said enough to stop; the answer is the whole instance.
                    Ok(_) => {
                        self.fetch().await?;
                        Ok(Some(self.current.clone()))
                    }
                    Err(failure) => Err(failure),
                };
            }
            if Instant::now() >= self.deadline {
                return Err(self.timed_out());
            }
            let wake = next_check.min(self.deadline);
            match tokio::time::timeout_at(wake, stream.next()).await {
                Err(_quiet) => {
                    next_check = Instant::now() + STREAM_CHECK_INTERVAL;
                    self.fetch().await?;
                    self.heartbeat();
                }
                Ok(Ok(Some(StreamEvent::Instance(change)))) => {
                    if change.id == self.current.id && change.updated_at >= self.current.updated_at
                    {
                        let mut seen = self.current.clone();
                        seen.state = change.state;
                        seen.generation = change.generation;
                        seen.observed_generation = change.observed_generation;
                        seen.error = change.error;
                        seen.updated_at = change.updated_at;
                        self.observe(seen);
                    }
                }
                Ok(Ok(Some(StreamEvent::Resync))) => self.fetch().await?,
                Ok(Ok(Some(StreamEvent::Hello | StreamEvent::Other(_)))) => {}
                Ok(Ok(None)) => {
                    tracing::debug!("the event stream ended; polling");
                    return Ok(None);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "the event stream broke; polling");
                    return Ok(None);
                }
            }
        }
    }

    /// Polls, pausing as [`Options::poll`] says, until the wait is over.
    async fn poll(&mut self) -> Result<Instance, WaitError> {
        let mut pause = self.options.poll.first;
        loop {
            if let Some(verdict) = self.verdict() {
                return verdict;
            }
            let now = Instant::now();
            if now >= self.deadline {
                return Err(self.timed_out());
            }
            tokio::time::sleep(pause.min(self.deadline - now)).await;
            pause = (pause * 2).min(self.options.poll.max);
            self.fetch().await?;
            self.heartbeat();
        }
    }
}

/// Errors worth riding out while waiting: the control plane restarting or
/// its database briefly away.
fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } => true,
        ClientError::Api { status, .. } => *status == 503,
        // A proxy in front of a control plane that is restarting.
        ClientError::NotPgplane { status, .. } => matches!(status, 502..=504),
        ClientError::Protocol { .. } | ClientError::InvalidEndpoint { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use axum::http::StatusCode;
    use chrono::{TimeZone, Utc};
    use domain::InstanceSpec;

    use super::*;

    fn at(state: State, generation: i64, observed: i64) -> Instance {
        Instance {
            id: uuid::Uuid::nil(),
            org: "acme".into(),
            name: "orders".into(),
            data_plane: "local".into(),
            owner: "api".into(),
            state,
            generation,
            observed_generation: observed,
            spec: InstanceSpec::default(),
            observed: None,
            observed_at: None,
            connection: None,
            error: None,
            restart_reasons: Vec::new(),
            backup: None,
            created_at: Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(),
            updated_at: Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(),
        }
    }

    #[test]
    fn settled_means_running_or_stopped_at_the_commands_generation() {
        use Progress::*;
        let cases = [
            (State::Submitted, 1, 0, Pending),
            (State::Up, 1, 1, Done),
            // Up, but the data plane has not reported on generation 2 yet.
            (State::Up, 2, 1, Pending),
            (State::Configuring, 2, 1, Pending),
            (State::Restarting, 2, 2, Pending),
            (State::Stopped, 3, 3, Done),
            (State::Stopped, 3, 2, Pending),
            (State::Starting, 4, 3, Pending),
            (State::Deleting, 5, 4, Pending),
            (State::Deleted, 5, 5, Gone),
        ];
        for (state, generation, observed, expected) in cases {
            let inst = at(state, generation, observed);
            assert_eq!(
                progress(&inst, generation, Goal::Settled),
                expected,
                "{state} {generation}/{observed}"
            );
        }
    }

    #[test]
    fn delete_waits_for_deleted_only() {
        assert_eq!(
            progress(&at(State::Deleting, 5, 4), 5, Goal::Deleted),
            Progress::Pending
        );
        assert_eq!(
            progress(&at(State::Up, 5, 5), 5, Goal::Deleted),
            Progress::Pending
        );
        assert_eq!(
            progress(&at(State::Deleted, 5, 5), 5, Goal::Deleted),
            Progress::Done
        );
    }

    #[test]
    fn error_fails_the_wait_with_the_reported_reason() {
        let mut inst = at(State::Error, 2, 2);
        inst.error = Some("initdb failed: disk full".into());
        assert_eq!(
            progress(&inst, 2, Goal::Settled),
            Progress::Failed("initdb failed: disk full".into())
        );
        inst.error = None;
        assert!(matches!(
            progress(&inst, 2, Goal::Deleted),
            Progress::Failed(_)
        ));
    }

    /// What the observer was told, in order.
    #[derive(Default)]
    struct Record(Vec<String>);

    impl Observer for Record {
        fn changed(&mut self, from: State, to: &Instance, _elapsed: Duration) {
            self.0.push(format!("{from} → {}", to.state));
        }

        fn waiting(&mut self, inst: &Instance, _generation: i64, _goal: Goal, _elapsed: Duration) {
            self.0.push(format!("still {}", inst.state));
        }

        fn retrying(&mut self, error: &ClientError) {
            self.0
                .push(format!("retrying after HTTP {:?}", error.status()));
        }
    }

    /// One answer of the test server to `GET /api/v1/instances/{id}`.
    type Answer = (StatusCode, serde_json::Value);

    fn unavailable() -> Answer {
        let body = crate::ErrorBody {
            code: crate::ErrorCode::Unavailable,
            message: "the database is briefly unavailable".into(),
            fields: Vec::new(),
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::to_value(body).unwrap(),
        )
    }

    fn instance_at(state: State, generation: i64, observed: i64) -> Answer {
        let inst = at(state, generation, observed);
        (StatusCode::OK, serde_json::to_value(inst).unwrap())
    }

    /// A control plane on loopback answering the instance fetches with
    /// `answers` in turn, the last one from then on (and no event stream):
    /// its endpoint and how many fetches it answered.
    async fn control_plane(answers: Vec<Answer>) -> (String, Arc<Mutex<usize>>) {
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let fetches = Arc::new(Mutex::new(0));
        let counted = fetches.clone();
        let app = axum::Router::new().route(
            "/api/v1/instances/{id}",
            axum::routing::get(move || async move {
                *counted.lock().unwrap() += 1;
                let mut answers = answers.lock().unwrap();
                let (status, body) = if answers.len() > 1 {
                    answers.pop_front().unwrap()
                } else {
                    answers.front().cloned().unwrap()
                };
                (status, axum::Json(body))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (endpoint, fetches)
    }

    fn options(goal: Goal, timeout: Duration, follow_events: bool) -> Options {
        Options {
            goal,
            timeout,
            follow_events,
            poll: Poll::every(Duration::from_millis(10)),
        }
    }

    #[tokio::test]
    async fn a_503_is_retried_until_the_instance_settles() {
        for follow_events in [false, true] {
            let (endpoint, fetches) =
                control_plane(vec![unavailable(), instance_at(State::Up, 1, 1)]).await;
            let client = Client::new(&endpoint, "token");
            let mut seen = Record::default();
            let settled = until(
                &client,
                at(State::Submitted, 1, 0),
                options(Goal::Settled, Duration::from_secs(10), follow_events),
                &mut seen,
                std::future::pending(),
            )
            .await
            .expect("the wait rides out the 503");
            assert_eq!(settled.state, State::Up);
            assert_eq!(*fetches.lock().unwrap(), 2);
            assert_eq!(
                seen.0,
                ["retrying after HTTP Some(503)", "Submitted → Up"],
                "events: {follow_events}"
            );
        }
    }

    #[tokio::test]
    async fn a_refusal_ends_the_wait_with_the_last_instance_seen() {
        let forbidden = (
            StatusCode::FORBIDDEN,
            serde_json::json!({"code": "forbidden", "message": "no"}),
        );
        let (endpoint, _) =
            control_plane(vec![instance_at(State::Configuring, 2, 1), forbidden]).await;
        let client = Client::new(&endpoint, "token");
        let err = until(
            &client,
            at(State::Up, 2, 1),
            options(Goal::Settled, Duration::from_secs(10), false),
            &mut Record::default(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        let WaitError::Api { inst, error } = err else {
            panic!("{err:?}");
        };
        assert_eq!(inst.state, State::Configuring);
        assert_eq!(error.status(), Some(403));
    }

    #[tokio::test]
    async fn not_found_is_deleted() {
        let missing = (
            StatusCode::NOT_FOUND,
            serde_json::json!({"code": "not_found", "message": "no such instance"}),
        );
        let (endpoint, _) = control_plane(vec![missing]).await;
        let client = Client::new(&endpoint, "token");
        let deleted = until(
            &client,
            at(State::Deleting, 3, 2),
            options(Goal::Deleted, Duration::from_secs(10), false),
            &mut Record::default(),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(deleted.state, State::Deleted);
        let err = until(
            &client,
            at(State::Configuring, 3, 2),
            options(Goal::Settled, Duration::from_secs(10), false),
            &mut Record::default(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, WaitError::Gone { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_timeout_carries_the_last_instance_and_error_seen() {
        let (endpoint, _) =
            control_plane(vec![instance_at(State::Configuring, 2, 1), unavailable()]).await;
        let client = Client::new(&endpoint, "token");
        let err = until(
            &client,
            at(State::Up, 2, 1),
            options(Goal::Settled, Duration::from_millis(200), false),
            &mut Record::default(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        let WaitError::Timeout {
            inst,
            after,
            generation,
            last_error,
        } = err
        else {
            panic!("{err:?}");
        };
        assert_eq!(inst.state, State::Configuring);
        assert_eq!(after, Duration::from_millis(200));
        assert_eq!(generation, 2);
        assert_eq!(
            last_error.as_deref(),
            Some("the database is briefly unavailable")
        );
    }

    #[tokio::test]
    async fn cancelling_ends_the_wait() {
        let (endpoint, _) = control_plane(vec![instance_at(State::Configuring, 2, 1)]).await;
        let client = Client::new(&endpoint, "token");
        let err = until(
            &client,
            at(State::Up, 2, 1),
            options(Goal::Settled, Duration::from_secs(60), false),
            &mut Record::default(),
            tokio::time::sleep(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, WaitError::Cancelled { .. }), "{err:?}");
        assert_eq!(err.instance().state, State::Configuring);
    }
}
