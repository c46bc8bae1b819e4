//! `--wait`: follow the instance until the data plane has acted on the
//! command, printing each state change to stderr as it happens. The wait
//! itself is [`api::wait`]'s, shared with the Terraform provider; this module
//! says how it reads on a terminal and what failure it is.

use std::time::Duration;

use api::wait::{self, Goal, Observer, Options, Poll, WaitError};
use api::{Client, ClientError, Instance};
use domain::State;

use super::failure::Failure;

/// How often the instance is fetched while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// `--timeout`: a duration in [`domain::duration`]'s grammar (`90s`, `5m`,
/// `1h30m`, `500ms`, `30d`; a bare number is seconds), longer than zero.
pub fn parse_duration(arg: &str) -> Result<Duration, String> {
    domain::duration::parse_positive(arg).map_err(|e| e.to_string())
}

/// `orders: Submitted → Up (generation 1)`
pub fn transition_line(name: &str, from: State, to: &Instance) -> String {
    format!(
        "{name}: {from} → {} (generation {})",
        to.state, to.generation
    )
}

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
/// stream where it offers one and polling otherwise (see [`wait::until`]).
pub async fn until_settled(
    client: &Client,
    started: Instance,
    goal: Goal,
    timeout: Duration,
) -> Result<Instance, Failure> {
    let name = started.name.clone();
    let options = Options {
        goal,
        timeout,
        follow_events: true,
        poll: Poll::every(POLL_INTERVAL),
    };
    let mut printer = Printer { name: &name };
    wait::until(
        client,
        started,
        options,
        &mut printer,
        std::future::pending(),
    )
    .await
    .map_err(|e| failure(&name, e))
}

/// Prints what the wait sees to stderr.
struct Printer<'a> {
    name: &'a str,
}

impl Observer for Printer<'_> {
    fn changed(&mut self, from: State, to: &Instance, elapsed: Duration) {
        eprintln!(
            "{} after {}",
            transition_line(self.name, from, to),
            seconds(elapsed)
        );
    }

    fn waiting(&mut self, inst: &Instance, generation: i64, goal: Goal, elapsed: Duration) {
        eprintln!("{}", heartbeat_line(inst, generation, goal, elapsed));
    }

    fn retrying(&mut self, error: &ClientError) {
        eprintln!("{}: {error}; retrying", self.name);
    }
}

/// The failure a wait for instance `name` ended in.
fn failure(name: &str, e: WaitError) -> Failure {
    let name = name.to_owned();
    match e {
        WaitError::Failed { reason, .. } => Failure::InstanceFailed {
            name,
            error: reason,
        },
        WaitError::Gone { .. } => Failure::Deleted { name },
        WaitError::Timeout {
            inst,
            after,
            generation,
            last_error,
        } => Failure::TimedOut {
            name,
            after,
            state: inst.state,
            generation,
            observed_generation: inst.observed_generation,
            last_error,
        },
        WaitError::Api { error, .. } => Failure::client(&name, error),
        WaitError::Cancelled { .. } => unreachable!("the CLI's wait is never cancelled"),
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

    #[test]
    fn transitions_read_as_arrows() {
        let mut inst = instance("orders");
        inst.state = State::Up;
        inst.observed_generation = 1;
        assert_eq!(
            transition_line("orders", State::Submitted, &inst),
            "orders: Submitted → Up (generation 1)"
        );
    }
}
