//! `--wait`: poll the instance until the data plane has acted on the command,
//! printing each state change to stderr as it happens.
//!
//! Whether the wait is over is a pure function ([`progress`]) of the instance
//! and the generation the command produced; the loop only fetches and prints.

use std::time::Duration;

use api::{Client, ClientError, Instance};
use domain::State;
use tokio::time::Instant;

use super::failure::Failure;

/// How often the instance is fetched while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// `--timeout`: `90s`, `5m`, `1h30m`, `500ms`; a bare number is seconds.
pub fn parse_duration(arg: &str) -> Result<Duration, String> {
    let invalid =
        || format!("invalid duration {arg:?}: use a number with a unit, like 90s, 5m or 1h30m");
    let text = arg.trim();
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return positive(Duration::from_secs(secs), arg);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" | "sec" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3_600),
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    positive(total, arg)
}

fn positive(d: Duration, arg: &str) -> Result<Duration, String> {
    if d.is_zero() {
        Err(format!(
            "invalid duration {arg:?}: must be longer than zero"
        ))
    } else {
        Ok(d)
    }
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

/// Polls until `started` (what the command returned) reaches `goal` at its
/// generation, or `timeout` passes. Polls by id, so a new instance that takes
/// the name meanwhile is not mistaken for this one.
pub async fn until_settled(
    client: &Client,
    started: Instance,
    goal: Goal,
    timeout: Duration,
) -> Result<Instance, Failure> {
    let deadline = Instant::now() + timeout;
    let generation = started.generation;
    let name = started.name.clone();
    let id = started.id.to_string();
    let mut current = started;
    let mut last_error: Option<String> = None;
    loop {
        match progress(&current, generation, goal) {
            Progress::Done => return Ok(current),
            Progress::Failed(error) => return Err(Failure::InstanceFailed { name, error }),
            Progress::Gone => return Err(Failure::Deleted { name }),
            Progress::Pending => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure::TimedOut {
                name,
                after: timeout,
                state: current.state,
                generation,
                observed_generation: current.observed_generation,
                last_error,
            });
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        let fetched = match tokio::time::timeout_at(deadline, client.get_instance(&id)).await {
            Ok(Ok(inst)) => inst,
            Ok(Err(e)) if is_transient(&e) => {
                let message = e.to_string();
                if last_error.as_deref() != Some(&message) {
                    eprintln!("{name}: {message}; retrying");
                }
                last_error = Some(message);
                continue;
            }
            Ok(Err(e)) => return Err(Failure::client(&name, e)),
            // The deadline passed mid-request: the next turn reports it.
            Err(_elapsed) => continue,
        };
        if fetched.state != current.state {
            eprintln!("{}", transition_line(&name, current.state, &fetched));
        }
        last_error = None;
        current = fetched;
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
    fn durations_take_units_and_combinations() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration("90s"), Ok(secs(90)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("5min"), Ok(secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5_400)));
        assert_eq!(parse_duration("2m30s"), Ok(secs(150)));
        assert_eq!(parse_duration("300"), Ok(secs(300)));
        assert_eq!(parse_duration(" 10s "), Ok(secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in ["", "s", "5x", "5 m", "-5s", "1.5m", "m5", "99999999999h"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("like 90s, 5m"), "{bad}: {err}");
        }
        assert!(parse_duration("0s")
            .unwrap_err()
            .contains("longer than zero"));
        assert!(parse_duration("0").is_err());
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
