//! The instance state machine (DESIGN.md §4).
//!
//! [`transition`] is the single source of truth: the state diagram in
//! ARCHITECTURE.md is generated from it ([`mermaid_diagram`]) and a test
//! checks every (state, event) pair.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum State {
    Submitted,
    Up,
    Configuring,
    Restarting,
    Stopping,
    Stopped,
    Starting,
    Deleting,
    Deleted,
    Error,
}

/// Commands from users and reports from the data plane.
///
/// A `Failed` report's reason is carried beside the event (in the report and
/// the history entry), so the table stays a plain (state, event) grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Event {
    // commands
    Create,
    Update,
    Restart,
    Stop,
    Start,
    Delete,
    // data-plane reports
    Created,
    Updated,
    Restarted,
    Stopped,
    Started,
    Deleted,
    Failed,
    Recovered,
    /// A standby was promoted because the primary was gone; the report's
    /// note names the members and how long the primary was unreachable.
    FailedOver,
}

impl State {
    pub const ALL: [State; 10] = [
        State::Submitted,
        State::Up,
        State::Configuring,
        State::Restarting,
        State::Stopping,
        State::Stopped,
        State::Starting,
        State::Deleting,
        State::Deleted,
        State::Error,
    ];

    /// States in which the data plane owes a report.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            State::Submitted
                | State::Configuring
                | State::Restarting
                | State::Stopping
                | State::Starting
                | State::Deleting
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Submitted => "Submitted",
            State::Up => "Up",
            State::Configuring => "Configuring",
            State::Restarting => "Restarting",
            State::Stopping => "Stopping",
            State::Stopped => "Stopped",
            State::Starting => "Starting",
            State::Deleting => "Deleting",
            State::Deleted => "Deleted",
            State::Error => "Error",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl Event {
    pub const ALL: [Event; 15] = [
        Event::Create,
        Event::Update,
        Event::Restart,
        Event::Stop,
        Event::Start,
        Event::Delete,
        Event::Created,
        Event::Updated,
        Event::Restarted,
        Event::Stopped,
        Event::Started,
        Event::Deleted,
        Event::Failed,
        Event::Recovered,
        Event::FailedOver,
    ];

    pub fn is_command(self) -> bool {
        matches!(
            self,
            Event::Create
                | Event::Update
                | Event::Restart
                | Event::Stop
                | Event::Start
                | Event::Delete
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Create => "Create",
            Event::Update => "Update",
            Event::Restart => "Restart",
            Event::Stop => "Stop",
            Event::Start => "Start",
            Event::Delete => "Delete",
            Event::Created => "Created",
            Event::Updated => "Updated",
            Event::Restarted => "Restarted",
            Event::Stopped => "Stopped",
            Event::Started => "Started",
            Event::Deleted => "Deleted",
            Event::Failed => "Failed",
            Event::Recovered => "Recovered",
            Event::FailedOver => "FailedOver",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Facts about the change that the table needs besides (state, event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// For `Update`: whether the new spec needs a Postgres restart
    /// ([`crate::predict_restart`]).
    pub restart_required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The pair is defined and forbidden, with the reason a user reads.
    #[error("cannot {event} an instance that is {state}: {reason}")]
    Illegal {
        state: State,
        event: Event,
        reason: &'static str,
    },
    /// Nobody defined what the event means in this state.
    #[error("event {event} is not defined in state {state}")]
    Undefined { state: State, event: Event },
}

/// The next state after `event` in `state`, or why not. Pure.
pub fn transition(state: State, event: Event, change: Change) -> Result<State, TransitionError> {
    use Event as E;
    use State as S;
    let illegal = |reason| {
        Err(TransitionError::Illegal {
            state,
            event,
            reason,
        })
    };
    let update_target = if change.restart_required {
        S::Restarting
    } else {
        S::Configuring
    };

    // Every state but `Deleted`, spelled out so that a new state must be
    // placed in each arm that names this rather than fall into it.
    macro_rules! live {
        () => {
            S::Submitted
                | S::Up
                | S::Configuring
                | S::Restarting
                | S::Stopping
                | S::Stopped
                | S::Starting
                | S::Error
                | S::Deleting
        };
    }

    match (state, event) {
        // Deleted is terminal: nothing happens to a deleted instance.
        (S::Deleted, _) => illegal("instance is deleted"),

        // Create only starts a new instance; see [`initial_state`].
        (live!(), E::Create) => illegal("instance already exists"),

        // Configuration changes are accepted from any non-deleted state,
        // except while a delete is under way.
        (S::Deleting, E::Update | E::Restart | E::Stop | E::Start) => {
            illegal("instance is being deleted")
        }
        (S::Up | S::Configuring | S::Error, E::Update) => Ok(update_target),
        (S::Restarting, E::Update) => Ok(S::Restarting),
        (S::Submitted | S::Stopping | S::Stopped | S::Starting, E::Update) => Ok(state),

        (S::Up | S::Configuring | S::Restarting | S::Error, E::Restart) => Ok(S::Restarting),
        (S::Submitted, E::Restart) => illegal("instance has not been created yet"),
        (S::Stopping | S::Stopped, E::Restart) => illegal("instance is stopped; start it instead"),
        (S::Starting, E::Restart) => illegal("instance is starting"),

        (
            S::Up | S::Configuring | S::Restarting | S::Starting | S::Stopping | S::Error,
            E::Stop,
        ) => Ok(S::Stopping),
        (S::Stopped, E::Stop) => illegal("instance is already stopped"),
        (S::Submitted, E::Stop) => illegal("instance has not been created yet"),

        (S::Stopped | S::Stopping | S::Starting | S::Error, E::Start) => Ok(S::Starting),
        (S::Up | S::Configuring | S::Restarting, E::Start) => {
            illegal("instance is already running")
        }
        (S::Submitted, E::Start) => illegal("instance has not been created yet"),

        (live!(), E::Delete) => Ok(S::Deleting),

        // Reports are facts: what the data plane did at the generation it
        // reports is what is, whatever state the instance was in (the table
        // is total for reports), so no sequence of failures, fixes,
        // redeliveries and crashes can leave an instance transitional.
        // Repeated reports (at-least-once delivery) keep the state.
        (
            live!(),
            E::Created | E::Updated | E::Restarted | E::Started | E::Recovered | E::FailedOver,
        ) => Ok(S::Up),
        (live!(), E::Stopped) => Ok(S::Stopped),
        (live!(), E::Deleted) => Ok(S::Deleted),
        (live!(), E::Failed) => Ok(S::Error),
    }
}

/// What the control plane does with one data-plane report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOutcome {
    /// The state to move to; `None` keeps the state (a stale report, an
    /// observation, or an instance already deleted).
    pub next: Option<State>,
    /// The generation the report is about (generation 0 read as the
    /// current one).
    pub generation: i64,
    /// The instance's `observed_generation` afterwards.
    pub observed_generation: i64,
    /// Whether the report goes into the instance's history: it moved the
    /// state, settled a newer generation, or carries news (an error or a
    /// note). A redelivered report records nothing.
    pub record: bool,
}

/// Where the instance stands, as the control plane stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub state: State,
    pub generation: i64,
    pub observed_generation: i64,
}

/// Settles one report against the instance's standing. A report for an
/// older generation than the current one never completes the newer change
/// (it only refreshes the observation); one for the current generation
/// always settles it. Generation 0 marks a report about a message whose
/// generation could not be read (a dead-lettered event): it is about the
/// current generation. Pure.
pub fn settle_report(
    standing: Standing,
    kind: crate::ReportKind,
    report_generation: i64,
    has_news: bool,
) -> ReportOutcome {
    let generation = if report_generation == 0 {
        standing.generation
    } else {
        report_generation
    };
    let keep = ReportOutcome {
        next: None,
        generation,
        observed_generation: standing.observed_generation,
        record: false,
    };
    if standing.state == State::Deleted {
        return keep;
    }
    let Some(event) = kind.event() else {
        return keep;
    };
    if generation < standing.generation {
        return keep;
    }
    let next = transition(standing.state, event, Change::default()).ok();
    let newer = generation > standing.observed_generation;
    ReportOutcome {
        next,
        generation,
        observed_generation: generation.max(standing.observed_generation),
        record: next.is_some_and(|to| to != standing.state || newer || has_news),
    }
}

/// The state a new instance starts in.
pub fn initial_state() -> State {
    State::Submitted
}

/// The Mermaid `stateDiagram-v2` of [`transition`], generated from the table.
/// Self-loops are left out to keep the picture readable; `Update` edges are
/// drawn for both restart predictions.
pub fn mermaid_diagram() -> String {
    use std::collections::BTreeMap;
    let mut edges: BTreeMap<(State, State), Vec<&str>> = BTreeMap::new();
    for from in State::ALL {
        for event in Event::ALL {
            for restart_required in [false, true] {
                if let Ok(to) = transition(from, event, Change { restart_required }) {
                    if to != from {
                        let labels = edges.entry((from, to)).or_default();
                        if !labels.contains(&event.as_str()) {
                            labels.push(event.as_str());
                        }
                    }
                }
            }
        }
    }
    let mut out = String::from("stateDiagram-v2\n    [*] --> Submitted: Create\n");
    for ((from, to), labels) in edges {
        out.push_str(&format!("    {from} --> {to}: {}\n", labels.join(", ")));
    }
    out.push_str("    Deleted --> [*]\n");
    out
}
