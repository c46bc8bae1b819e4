//! Every (state, event) pair, checked against the table written out below.
//! The table is the specification; `transition` must agree with it cell by cell.
//!
//! Cells: a state name; `C/R` = Configuring, or Restarting when the change
//! needs a restart; `!` = IllegalTransition; `?` = UndefinedTransition.

use domain::state::{transition, Change, Event, State, TransitionError};

const COLUMNS: [&str; 15] = [
    "Create",
    "Update",
    "Restart",
    "Stop",
    "Start",
    "Delete",
    "Created",
    "Updated",
    "Restarted",
    "Stopped",
    "Started",
    "Deleted",
    "Failed",
    "Recovered",
    "FailedOver",
];

const TABLE: &str = "
Submitted   | !  Submitted  !          !        !        Deleting | Up Up Up Stopped Up Deleted Error Up Up
Up          | !  C/R        Restarting Stopping !        Deleting | Up Up Up Stopped Up Deleted Error Up Up
Configuring | !  C/R        Restarting Stopping !        Deleting | Up Up Up Stopped Up Deleted Error Up Up
Restarting  | !  Restarting Restarting Stopping !        Deleting | Up Up Up Stopped Up Deleted Error Up Up
Stopping    | !  Stopping   !          Stopping Starting Deleting | Up Up Up Stopped Up Deleted Error Up Up
Stopped     | !  Stopped    !          !        Starting Deleting | Up Up Up Stopped Up Deleted Error Up Up
Starting    | !  Starting   !          Stopping Starting Deleting | Up Up Up Stopped Up Deleted Error Up Up
Deleting    | !  !          !          !        !        Deleting | Up Up Up Stopped Up Deleted Error Up Up
Deleted     | !  !          !          !        !        !        | !  !  !  !       !  !       !     !     !
Error       | !  C/R        Restarting Stopping Starting Deleting | Up Up Up Stopped Up Deleted Error Up Up
";

#[derive(Debug, PartialEq)]
enum Outcome {
    To(State),
    Illegal,
    Undefined,
}

fn expected(cell: &str, restart_required: bool) -> Outcome {
    match cell {
        "!" => Outcome::Illegal,
        "?" => Outcome::Undefined,
        "C/R" if restart_required => Outcome::To(State::Restarting),
        "C/R" => Outcome::To(State::Configuring),
        s => Outcome::To(State::parse(s).unwrap_or_else(|| panic!("bad cell {s}"))),
    }
}

fn actual(state: State, event: Event, restart_required: bool) -> Outcome {
    match transition(state, event, Change { restart_required }) {
        Ok(s) => Outcome::To(s),
        Err(TransitionError::Illegal { .. }) => Outcome::Illegal,
        Err(TransitionError::Undefined { .. }) => Outcome::Undefined,
    }
}

#[test]
fn columns_are_every_event_in_order() {
    let names: Vec<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(names, COLUMNS);
}

#[test]
fn every_state_event_pair_matches_the_table() {
    let rows: Vec<&str> = TABLE.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(rows.len(), State::ALL.len(), "one row per state");
    let mut checked = 0;
    for (row, state) in rows.iter().zip(State::ALL) {
        let cells: Vec<&str> = row.split_whitespace().filter(|c| *c != "|").collect();
        assert_eq!(cells[0], state.as_str(), "rows are in State::ALL order");
        assert_eq!(cells.len(), 1 + Event::ALL.len(), "row {state}");
        for (cell, event) in cells[1..].iter().zip(Event::ALL) {
            for restart in [false, true] {
                assert_eq!(
                    actual(state, event, restart),
                    expected(cell, restart),
                    "({state}, {event}, restart_required={restart})"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 10 * 15 * 2);
}

#[test]
fn errors_name_state_and_event() {
    let err = transition(State::Deleted, Event::Update, Change::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot Update an instance that is Deleted: instance is deleted"
    );
    let err = transition(State::Deleted, Event::Created, Change::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot Created an instance that is Deleted: instance is deleted"
    );
}

#[test]
fn failed_reaches_error_from_every_live_state() {
    for s in State::ALL.into_iter().filter(|s| *s != State::Deleted) {
        assert_eq!(
            transition(s, Event::Failed, Change::default()),
            Ok(State::Error),
            "{s}"
        );
    }
}
