//! `--wait`: follow the instance until the data plane has acted on the
//! command, printing each state change to stderr as it happens: on the
//! control plane's event stream where it offers one, by polling otherwise.
//!
//! Whether the wait is over is a pure function ([`progress`]) of the instance
//! and the generation the command produced; the loops only fetch and print.

use std::time::Duration;

use api::{Client, ClientError, Instance, StreamEvent};
use domain::State;
use tokio::time::Instant;

use super::failure::Failure;

/// How often the instance is fetched while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// `--timeout`: a duration in [`domain::duration`]'s grammar (`90s`, `5m`,
/// `1h30m`, `500ms`, `30d`; a bare number is seconds), longer than zero.
pub fn parse_duration(arg: &str) -> Result<Duration, String> {
    domain::duration::parse_positive(arg).map_err(|e| e.to_string())
}

/// What the command waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Running or stopped, at the command's generation.
    Settled,
    /// Gone for good (`delete`).
    Deleted,
}

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

/// `orders: Submitted → Up (generation 1)`
pub fn transition_line(name: &str, from: State, to: &Instance) -> String {
    format!(
        "{name}: {from} → {} (generation {})",
        to.state, to.generation
    )
}

/// How long a wait stays silent before it says it is still waiting.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// `orders: still Configuring after 20s, waiting for the data plane to apply generation 3`
pub fn heartbeat_line(inst: &Instance, generation: i64, goal: Goal, elapsed: Duration) -> String {
    let what = match goal {
        Goal::Deleted => "delete it".to_owned(),
        Goal::Settled if inst.observed_generation < generation => {
            format!("apply generation {generation}")
        }
        Goal::Settled => format!("finish ({} so far)", inst.state),
    };
    format!(
        "{}: still {} after {}, waiting for the data plane to {what}",
        inst.name,
        inst.state,
        seconds(elapsed)
    )
}

/// `3.2s`, `75s`.
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Waits until `started` (what the command returned) reaches `goal` at its
/// generation, or `timeout` passes, following the control plane's event
/// stream and fetching the instance when it changes; without the stream (an
/// older control plane answers 404) or once it breaks, by polling. Follows
/// the instance by id, so a new instance that takes the name meanwhile is
/// not mistaken for this one.
pub async fn until_settled(
    client: &Client,
    started: Instance,
    goal: Goal,
    timeout: Duration,
) -> Result<Instance, Failure> {
    let mut watch = Watch {
        started_at: Instant::now(),
        last_said: Instant::now(),
        deadline: Instant::now() + timeout,
        timeout,
        generation: started.generation,
        goal,
        name: started.name.clone(),
        id: started.id.to_string(),
        current: started,
        last_error: None,
    };
    if let Some(verdict) = watch.verdict() {
        return verdict;
    }
    match follow_events(client, &mut watch).await? {
        Some(done) => Ok(done),
        None => poll(client, &mut watch).await,
    }
}

/// How often the instance is fetched while following the event stream
/// anyway, in case the stream goes quiet without ending.
pub const STREAM_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// One wait: what it waits for and the instance as last seen.
struct Watch {
    started_at: Instant,
    /// When the wait last printed a line.
    last_said: Instant,
    deadline: Instant,
    timeout: Duration,
    generation: i64,
    goal: Goal,
    name: String,
    id: String,
    current: Instance,
    /// The last transient error, while requests are failing.
    last_error: Option<String>,
}

impl Watch {
    /// The wait's outcome, once there is one.
    fn verdict(&self) -> Option<Result<Instance, Failure>> {
        let name = self.name.clone();
        match progress(&self.current, self.generation, self.goal) {
            Progress::Done => Some(Ok(self.current.clone())),
            Progress::Failed(error) => Some(Err(Failure::InstanceFailed { name, error })),
            Progress::Gone => Some(Err(Failure::Deleted { name })),
            Progress::Pending => None,
        }
    }

    fn timed_out(&self) -> Failure {
        Failure::TimedOut {
            name: self.name.clone(),
            after: self.timeout,
            state: self.current.state,
            generation: self.generation,
            observed_generation: self.current.observed_generation,
            last_error: self.last_error.clone(),
        }
    }

    /// Takes `seen` as the instance now, printing a change of state.
    fn observe(&mut self, seen: Instance) {
        if seen.state != self.current.state {
            eprintln!(
                "{} after {}",
                transition_line(&self.name, self.current.state, &seen),
                seconds(self.started_at.elapsed())
            );
            self.last_said = Instant::now();
        }
        self.current = seen;
    }

    /// Says the wait goes on, when it has been silent for [`HEARTBEAT`].
    fn heartbeat(&mut self) {
        if self.last_said.elapsed() >= HEARTBEAT && self.verdict().is_none() {
            eprintln!(
                "{}",
                heartbeat_line(
                    &self.current,
                    self.generation,
                    self.goal,
                    self.started_at.elapsed()
                )
            );
            self.last_said = Instant::now();
        }
    }

    /// Fetches the instance; `Ok(false)` when the fetch failed in a way
    /// worth retrying (or the deadline passed mid-request).
    async fn fetch(&mut self, client: &Client) -> Result<bool, Failure> {
        match tokio::time::timeout_at(self.deadline, client.get_instance(&self.id)).await {
            Ok(Ok(inst)) => {
                self.last_error = None;
                self.observe(inst);
                Ok(true)
            }
            Ok(Err(e)) if is_transient(&e) => {
                let message = e.to_string();
                if self.last_error.as_deref() != Some(&message) {
                    eprintln!("{}: {message}; retrying", self.name);
                }
                self.last_error = Some(message);
                Ok(false)
            }
            Ok(Err(e)) => Err(Failure::client(&self.name, e)),
            Err(_elapsed) => Ok(false),
        }
    }
}

/// Follows the event stream until the wait is over (`Some`), or returns
/// `None` when there is no stream or it broke, for polling to go on.
async fn follow_events(client: &Client, watch: &mut Watch) -> Result<Option<Instance>, Failure> {
    let since = watch.current.updated_at;
    let mut stream =
        match tokio::time::timeout_at(watch.deadline, client.instance_events(Some(since))).await {
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
        if let Some(verdict) = watch.verdict() {
            return match verdict {
                // The event said enough to stop; the answer is the whole instance.
                Ok(_) => {
                    watch.fetch(client).await?;
                    Ok(Some(watch.current.clone()))
                }
                Err(failure) => Err(failure),
            };
        }
        if Instant::now() >= watch.deadline {
            return Err(watch.timed_out());
        }
        let wake = next_check.min(watch.deadline);
        match tokio::time::timeout_at(wake, stream.next()).await {
            Err(_quiet) => {
                next_check = Instant::now() + STREAM_CHECK_INTERVAL;
                watch.fetch(client).await?;
                watch.heartbeat();
            }
            Ok(Ok(Some(StreamEvent::Instance(change)))) => {
                if change.id == watch.current.id && change.updated_at >= watch.current.updated_at {
                    let mut seen = watch.current.clone();
                    seen.state = change.state;
                    seen.generation = change.generation;
                    seen.observed_generation = change.observed_generation;
                    seen.error = change.error;
                    seen.updated_at = change.updated_at;
                    watch.observe(seen);
                }
            }
            Ok(Ok(Some(StreamEvent::Resync))) => {
                watch.fetch(client).await?;
            }
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

/// Polls every [`POLL_INTERVAL`] until the wait is over.
async fn poll(client: &Client, watch: &mut Watch) -> Result<Instance, Failure> {
    loop {
        if let Some(verdict) = watch.verdict() {
            return verdict;
        }
        let now = Instant::now();
        if now >= watch.deadline {
            return Err(watch.timed_out());
        }
        tokio::time::sleep(POLL_INTERVAL.min(watch.deadline - now)).await;
        watch.fetch(client).await?;
        watch.heartbeat();
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
    use super::*;
    use crate::instance::view::tests::instance;

    #[test]
    fn a_heartbeat_says_what_is_awaited() {
        let mut inst = instance("orders");
        inst.state = State::Configuring;
        inst.generation = 3;
        inst.observed_generation = 2;
        assert_eq!(
            heartbeat_line(&inst, 3, Goal::Settled, Duration::from_secs(20)),
            format!(
                "{}: still Configuring after 20s, waiting for the data plane to apply generation 3",
                inst.name
            )
        );
        inst.state = State::Deleting;
        assert!(
            heartbeat_line(&inst, 3, Goal::Deleted, Duration::from_millis(4_250))
                .ends_with("still Deleting after 4.2s, waiting for the data plane to delete it")
        );
    }

    fn at(state: State, generation: i64, observed: i64) -> Instance {
        let mut inst = instance("orders");
        inst.state = state;
        inst.generation = generation;
        inst.observed_generation = observed;
        inst
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

    #[test]
    fn transitions_read_as_arrows() {
        let inst = at(State::Up, 1, 1);
        assert_eq!(
            transition_line("orders", State::Submitted, &inst),
            "orders: Submitted → Up (generation 1)"
        );
    }
}
