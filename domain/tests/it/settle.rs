//! Random sequences of commands, data-plane work, failures, redeliveries,
//! reorderings and crashes, through the real decisions (`transition`,
//! `settle_report`): once the data plane is quiet, every instance has
//! settled in `Up`, `Stopped`, `Deleted` or `Error`, never in a
//! transitional state, and what it says agrees with what the data plane
//! runs.
//!
//! The planes are modelled as the conductor and local runtime behave: events
//! carry the full desired spec and a generation; a generation already
//! applied is re-reported, not re-applied; an event superseded by a newer
//! one already read is acknowledged unapplied; a message is redelivered until
//! acknowledged, and dead-lettered (reported `Failed`) after too many
//! deliveries; a crash loses whatever was not acknowledged or committed; the
//! control plane re-sends the event of an instance that owes a report and,
//! after bounded re-sends, fails it with the reason.

use domain::state::{settle_report, transition, Change, Event, Standing, State};
use domain::{EventKind, ReportKind};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

const MAX_DELIVERIES: u32 = 5;
const MAX_RESENDS: u32 = 3;

#[derive(Debug, Clone, Copy)]
struct QueuedEvent {
    generation: i64,
    kind: EventKind,
    stopped: bool,
    deliveries: u32,
}

#[derive(Debug, Clone, Copy)]
struct Report {
    generation: i64,
    kind: ReportKind,
}

/// The control plane's row of the instance.
#[derive(Debug)]
struct ControlPlane {
    standing: Standing,
    last_event: EventKind,
    stopped: bool,
    resends: u32,
    history: Vec<(State, Event, State)>,
}

/// What the local runtime's state file and server say.
#[derive(Debug, Default)]
struct DataPlane {
    exists: bool,
    running: bool,
    applied: i64,
    last_report: Option<ReportKind>,
    /// The tombstone a delete leaves.
    deleted: bool,
}

#[derive(Debug, Default)]
struct World {
    cp: Option<ControlPlane>,
    dp: DataPlane,
    events: Vec<QueuedEvent>,
    reports: Vec<Report>,
    /// The conductor's newest generation read (in memory: a crash forgets).
    newest_read: i64,
}

#[derive(Debug, Clone)]
enum Step {
    Command(EventKind, bool),
    /// The conductor takes the `n`th queued event and: applies it
    /// (`Ok`), fails applying it, or crashes before acknowledging.
    Deliver(usize, Delivery),
    /// The status consumer takes the `n`th report; `true` redelivers it
    /// later again (a crash between commit and delete).
    Report(usize, bool),
    /// The desired≠actual loop runs.
    Resend,
}

#[derive(Debug, Clone, Copy)]
enum Delivery {
    Ok,
    Fail,
    CrashBeforeReport,
    CrashAfterReport,
}

impl World {
    fn command(&mut self, kind: EventKind, restart_required: bool) {
        let Some(cp) = self.cp.as_mut() else {
            // Create.
            self.cp = Some(ControlPlane {
                standing: Standing {
                    state: State::Submitted,
                    generation: 1,
                    observed_generation: 0,
                },
                last_event: EventKind::Create,
                stopped: false,
                resends: 0,
                history: Vec::new(),
            });
            self.enqueue();
            return;
        };
        let event = match kind {
            EventKind::Create | EventKind::Update => Event::Update,
            EventKind::Restart => Event::Restart,
            EventKind::Stop => Event::Stop,
            EventKind::Start => Event::Start,
            EventKind::Delete => Event::Delete,
            EventKind::Backup | EventKind::Switchover => return, // requests; no state to settle
        };
        let Ok(next) = transition(cp.standing.state, event, Change { restart_required }) else {
            return; // 409: nothing written.
        };
        cp.history.push((cp.standing.state, event, next));
        cp.standing.state = next;
        cp.standing.generation += 1;
        cp.last_event = EventKind::from_event(event).expect("a command");
        match event {
            Event::Stop => cp.stopped = true,
            Event::Start => cp.stopped = false,
            _ => {}
        }
        cp.resends = 0;
        self.enqueue();
    }

    fn enqueue(&mut self) {
        let cp = self.cp.as_ref().expect("instance exists");
        self.events.push(QueuedEvent {
            generation: cp.standing.generation,
            kind: cp.last_event,
            stopped: cp.stopped,
            deliveries: 0,
        });
    }

    fn deliver(&mut self, n: usize, how: Delivery) {
        if self.events.is_empty() {
            return;
        }
        let i = n % self.events.len();
        self.events[i].deliveries += 1;
        let ev = self.events[i];
        // The conductor reads ahead: what it holds counts as read.
        let held = self.events.iter().take(4).map(|e| e.generation).max();
        self.newest_read = self.newest_read.max(held.unwrap_or(0)).max(ev.generation);
        if ev.generation < self.newest_read {
            self.events.remove(i); // superseded: acknowledged unapplied
            return;
        }
        if ev.deliveries > MAX_DELIVERIES {
            self.events.remove(i);
            self.reports.push(Report {
                generation: ev.generation,
                kind: ReportKind::Failed,
            });
            return;
        }
        let report = match how {
            Delivery::Fail => Report {
                generation: ev.generation,
                kind: ReportKind::Failed,
            },
            Delivery::Ok | Delivery::CrashBeforeReport | Delivery::CrashAfterReport => {
                self.dp.apply(ev)
            }
        };
        match how {
            Delivery::CrashBeforeReport => self.newest_read = 0,
            Delivery::CrashAfterReport => self.reports.push(report),
            Delivery::Ok | Delivery::Fail => {
                self.reports.push(report);
                self.events.remove(i);
            }
        }
    }

    fn report(&mut self, n: usize, redeliver: bool) {
        if self.reports.is_empty() {
            return;
        }
        let i = n % self.reports.len();
        let r = if redeliver {
            self.reports[i]
        } else {
            self.reports.remove(i)
        };
        let Some(cp) = self.cp.as_mut() else { return };
        let out = settle_report(cp.standing, r.kind, r.generation, false);
        if out.observed_generation > cp.standing.observed_generation {
            cp.resends = 0;
        }
        cp.standing.observed_generation = out.observed_generation;
        if let Some(next) = out.next {
            if out.record {
                cp.history
                    .push((cp.standing.state, r.kind.event().expect("an event"), next));
            }
            cp.standing.state = next;
        }
    }

    fn resend(&mut self) {
        let Some(cp) = self.cp.as_mut() else { return };
        if !cp.standing.state.is_transitional()
            || cp.standing.observed_generation >= cp.standing.generation
        {
            return;
        }
        if cp.resends >= MAX_RESENDS {
            let out = settle_report(cp.standing, ReportKind::Failed, 0, true);
            cp.standing.state = out.next.expect("Failed is defined in every live state");
            cp.standing.observed_generation = out.observed_generation;
            return;
        }
        cp.resends += 1;
        self.enqueue();
    }

    /// The data plane works through everything it has, without failing.
    fn quiet(&mut self) {
        for _ in 0..(MAX_RESENDS + 2) {
            while !self.events.is_empty() {
                self.deliver(0, Delivery::Ok);
            }
            while !self.reports.is_empty() {
                self.report(0, false);
            }
            self.resend();
        }
    }
}

impl DataPlane {
    /// The local runtime's apply (`LocalRuntime::apply_locked`).
    fn apply(&mut self, ev: QueuedEvent) -> Report {
        let deleted = Report {
            generation: ev.generation,
            kind: ReportKind::Deleted,
        };
        if self.deleted {
            return deleted;
        }
        if self.exists && ev.generation <= self.applied {
            return Report {
                generation: ev.generation,
                kind: self.last_report.unwrap_or(ReportKind::Updated),
            };
        }
        if ev.kind == EventKind::Delete {
            *self = DataPlane {
                deleted: true,
                ..DataPlane::default()
            };
            return deleted;
        }
        let created = !self.exists;
        let was_running = self.running;
        self.exists = true;
        self.running = !ev.stopped;
        let kind = if ev.stopped {
            ReportKind::Stopped
        } else if created {
            ReportKind::Created
        } else if !was_running || ev.kind == EventKind::Start {
            ReportKind::Started
        } else if ev.kind == EventKind::Restart {
            ReportKind::Restarted
        } else {
            ReportKind::Updated
        };
        self.applied = ev.generation;
        self.last_report = Some(kind);
        Report {
            generation: ev.generation,
            kind,
        }
    }
}

fn command_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        4 => Just(EventKind::Update),
        2 => Just(EventKind::Restart),
        2 => Just(EventKind::Stop),
        2 => Just(EventKind::Start),
        1 => Just(EventKind::Delete),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let delivery = prop_oneof![
        6 => Just(Delivery::Ok),
        2 => Just(Delivery::Fail),
        1 => Just(Delivery::CrashBeforeReport),
        1 => Just(Delivery::CrashAfterReport),
    ];
    prop_oneof![
        3 => (command_kind(), any::<bool>()).prop_map(|(k, r)| Step::Command(k, r)),
        4 => (any::<usize>(), delivery).prop_map(|(n, d)| Step::Deliver(n, d)),
        4 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(n, r)| Step::Report(n, r)),
        1 => Just(Step::Resend),
    ]
}

const SEQUENCES: u32 = 4000;

/// Runs one sequence; returns where the instance settled.
fn settles(steps: &[Step]) -> Result<State, TestCaseError> {
    let mut w = World::default();
    w.command(EventKind::Create, false);
    for s in steps {
        match s.clone() {
            Step::Command(kind, restart) => w.command(kind, restart),
            Step::Deliver(n, how) => w.deliver(n, how),
            Step::Report(n, again) => w.report(n, again),
            Step::Resend => w.resend(),
        }
    }
    w.quiet();
    let cp = w.cp.as_ref().expect("created");
    let state = cp.standing.state;
    prop_assert!(
        matches!(
            state,
            State::Up | State::Stopped | State::Deleted | State::Error
        ),
        "stuck in {state} at generation {} (observed {}); history {:?}",
        cp.standing.generation,
        cp.standing.observed_generation,
        cp.history
    );
    // What the control plane says agrees with the data plane.
    match state {
        State::Up => prop_assert!(w.dp.exists && w.dp.running, "Up but {:?}", w.dp),
        State::Stopped => prop_assert!(!w.dp.running, "Stopped but {:?}", w.dp),
        State::Deleted => prop_assert!(!w.dp.exists, "Deleted but {:?}", w.dp),
        State::Error => {}
        _ => unreachable!(),
    }
    Ok(state)
}

#[test]
fn every_instance_settles_once_the_data_plane_is_quiet() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: SEQUENCES,
        ..ProptestConfig::default()
    });
    let settled = std::cell::RefCell::new(std::collections::BTreeMap::<State, u32>::new());
    let result = runner.run(&prop::collection::vec(step(), 1..60), |steps| {
        let state = settles(&steps)?;
        *settled.borrow_mut().entry(state).or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let settled = settled.into_inner();
    let total: u32 = settled.values().sum();
    eprintln!(
        "state-machine sequences: {total} run, settled {}; stuck: 0",
        settled
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(total >= SEQUENCES);
}

#[test]
fn a_fixed_create_failure_and_a_restart_after_a_crash_settle() {
    // Error (create failed) → Update → the data plane creates: Created
    // completes the update.
    let mut w = World::default();
    w.command(EventKind::Create, false);
    w.deliver(0, Delivery::Fail);
    w.report(0, false);
    assert_eq!(w.cp.as_ref().unwrap().standing.state, State::Error);
    w.command(EventKind::Update, false);
    assert_eq!(w.cp.as_ref().unwrap().standing.state, State::Configuring);
    w.deliver(0, Delivery::Ok);
    w.report(0, false);
    assert_eq!(w.cp.as_ref().unwrap().standing.state, State::Up);

    // A restart of a server that had stopped: the data plane reports Started.
    w.dp.running = false;
    w.command(EventKind::Restart, false);
    w.deliver(0, Delivery::Ok);
    w.report(0, false);
    assert_eq!(w.cp.as_ref().unwrap().standing.state, State::Up);
}

#[test]
fn a_silent_data_plane_fails_the_instance_after_bounded_resends() {
    let mut w = World::default();
    w.command(EventKind::Create, false);
    for _ in 0..=MAX_RESENDS {
        w.events.clear(); // every event is lost
        w.resend();
    }
    let cp = w.cp.as_ref().unwrap();
    assert_eq!(cp.standing.state, State::Error);
}

#[test]
fn a_redelivered_report_records_nothing() {
    let standing = Standing {
        state: State::Up,
        generation: 3,
        observed_generation: 3,
    };
    let out = settle_report(standing, ReportKind::Updated, 3, false);
    assert_eq!(out.next, Some(State::Up));
    assert!(!out.record);
    let with_news = settle_report(standing, ReportKind::Recovered, 3, true);
    assert!(with_news.record);
    let stale = settle_report(
        Standing {
            state: State::Configuring,
            generation: 4,
            observed_generation: 3,
        },
        ReportKind::Updated,
        3,
        false,
    );
    assert_eq!(stale.next, None);
    assert_eq!(stale.observed_generation, 3);
}
