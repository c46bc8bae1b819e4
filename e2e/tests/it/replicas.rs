//! Standbys through `pgplane up`, with real servers and real kills: a
//! killed primary is replaced and rejoins as a standby, a hung one is
//! fenced, scaling never restarts the primary, and bad input is refused.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(120);

fn credentials(name: &str, format: &str, env: &[(&str, &str)]) -> String {
    ok(&["instance", "credentials", name, "--format", format], env)
        .trim()
        .to_owned()
}

fn instance(name: &str, env: &[(&str, &str)]) -> serde_json::Value {
    json(&["instance", "get", name], env)
}

/// `(name, role, state)` of each member, as `instance get` reports them.
fn members(name: &str, env: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let inst = instance(name, env);
    inst["observed"]["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or_default().to_owned(),
                        m["role"].as_str().unwrap_or_default().to_owned(),
                        m["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the instance has one primary and `standbys` streaming
/// standbys; returns the primary's name.
fn wait_streaming(name: &str, standbys: usize, env: &[(&str, &str)]) -> String {
    eventually(
        &format!("{name}: a primary and {standbys} streaming standbys"),
        WAIT,
        || {
            let ms = members(name, env);
            let primaries: Vec<&(String, String, String)> =
                ms.iter().filter(|m| m.1 == "primary").collect();
            let streaming = ms
                .iter()
                .filter(|m| m.1 == "standby" && m.2 == "streaming")
                .count();
            (primaries.len() == 1 && streaming == standbys && ms.len() == standbys + 1)
                .then(|| primaries[0].0.clone())
        },
    )
}

/// The postmaster listening on `port` among the instances' data
/// directories: its pid and directory.
fn postmaster_on(data_dir: &Path, port: u16) -> (i32, std::path::PathBuf) {
    let instances = data_dir.join("instances");
    for entry in std::fs::read_dir(&instances).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("postmaster.pid")) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        if lines.get(3).and_then(|p| p.trim().parse::<u16>().ok()) == Some(port) {
            return (lines[0].trim().parse().unwrap(), entry.path());
        }
    }
    panic!("no postmaster on port {port} under {}", instances.display());
}

fn primary_port(name: &str, env: &[(&str, &str)]) -> u16 {
    instance(name, env)["connection"]["port"].as_u64().unwrap() as u16
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn history_notes(name: &str, env: &[(&str, &str)]) -> Vec<(String, String)> {
    json(&["instance", "history", name], env)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["event"].as_str().unwrap_or_default().to_owned(),
                h["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Whether `psql -c SQL` succeeds, giving up on a connection after 2 s.
fn succeeds(uri: &str, sql: &str) -> bool {
    std::process::Command::new("psql")
        .args([uri, "-Atc", sql])
        .env("PGCONNECT_TIMEOUT", "2")
        .output()
        .unwrap()
        .status
        .success()
}

/// `psql` against one member's port with the instance's password.
fn member_uri(uri: &str, port: u16) -> String {
    let (head, _) = uri.rsplit_once('@').unwrap();
    format!("{head}@127.0.0.1:{port}/postgres")
}

#[test]
fn a_killed_primary_is_replaced_by_a_standby_and_rejoins_as_one() {
    let up = Embedded::start();
    let env = up.env();
    ok(
        &["instance", "create", "ha", "--replicas", "3", "--wait"],
        &env,
    );
    let first = wait_streaming("ha", 2, &env);
    assert_eq!(first, "member-0");
    let rw = credentials("ha", "read-write-uri", &env);
    let ro = credentials("ha", "read-only-uri", &env);
    assert!(rw.contains("target_session_attrs=read-write"), "{rw}");
    assert_eq!(rw.matches(":").count(), ro.matches(":").count());
    psql(&rw, "create table t (id int primary key)");
    psql(&rw, "insert into t select generate_series(1, 100)");
    // Reads go to a standby, which has the rows.
    assert_eq!(psql(&ro, "select pg_is_in_recovery()"), "t");
    eventually("the rows on a standby", WAIT, || {
        (psql(&ro, "select count(*) from t") == "100").then_some(())
    });

    let old_port = primary_port("ha", &env);
    let (pid, _) = postmaster_on(&up.data_dir, old_port);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The read-write URI finds the new primary by itself.
    eventually("a write through the read-write URI", WAIT, || {
        succeeds(&rw, "insert into t values (101)").then_some(())
    });
    assert_eq!(psql(&rw, "select count(*) from t"), "101");
    let failover = eventually("the failover in the history", WAIT, || {
        history_notes("ha", &env)
            .into_iter()
            .find(|(event, _)| event == "FailedOver")
    });
    assert!(
        failover.1.contains("promoted, member-0 unreachable"),
        "{failover:?}"
    );
    // The old primary is a standby of the new one, on the new timeline.
    let now_primary = wait_streaming("ha", 2, &env);
    assert_ne!(now_primary, "member-0");
    assert_ne!(primary_port("ha", &env), old_port);
    let old = member_uri(&rw, old_port);
    assert_eq!(psql(&old, "select pg_is_in_recovery()"), "t");
    eventually("the old primary replays the new writes", WAIT, || {
        (psql(&old, "select count(*) from t") == "101").then_some(())
    });
    let inst = instance("ha", &env);
    assert_eq!(inst["state"], "Up");
    for m in inst["observed"]["members"].as_array().unwrap() {
        assert_eq!(m["timeline"], 2, "{m}");
    }
    eventually("no drift in the members", WAIT, || {
        (!ok(&["drift"], &env).contains("replicas")).then_some(())
    });
}

#[test]
fn a_hung_primary_is_fenced_before_its_standby_takes_over() {
    let up = Embedded::start_with(
        &["--failover-timeout", "2s"],
        &[("RUST_LOG", "info,conductor=debug,agent=debug")],
    );
    let env = up.env();
    ok(
        &["instance", "create", "hung", "--replicas", "2", "--wait"],
        &env,
    );
    wait_streaming("hung", 1, &env);
    let rw = credentials("hung", "read-write-uri", &env);
    psql(&rw, "create table t (id int)");
    let old_port = primary_port("hung", &env);
    let (pid, _) = postmaster_on(&up.data_dir, old_port);
    // A session opened before the hang, whose backend keeps running.
    let old = member_uri(&rw, old_port);
    let stopped = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(stopped, nix::sys::signal::Signal::SIGSTOP).unwrap();
    eventually("the hung primary fenced", WAIT, || {
        (!alive(pid)).then_some(())
    });
    eventually("a write through the read-write URI", WAIT, || {
        succeeds(&rw, "insert into t values (1)").then_some(())
    });
    // Continuing a fenced process does nothing: it is gone. The member comes
    // back as a standby, and nothing it serves accepts writes.
    let _ = nix::sys::signal::kill(stopped, nix::sys::signal::Signal::SIGCONT);
    eventually("the old primary back as a standby", WAIT, || {
        let up = std::process::Command::new("psql")
            .args([old.as_str(), "-Atc", "select pg_is_in_recovery()"])
            .env("PGCONNECT_TIMEOUT", "2")
            .output()
            .unwrap();
        (up.status.success() && String::from_utf8_lossy(&up.stdout).trim() == "t").then_some(())
    });
    let refused = std::process::Command::new("psql")
        .args([old.as_str(), "-Atc", "insert into t values (2)"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("read-only transaction"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    eventually("the failover in the history", WAIT, || {
        history_notes("hung", &env)
            .iter()
            .any(|(e, n)| e == "FailedOver" && n.contains("did not answer"))
            .then_some(())
    });
}

#[test]
fn scaling_adds_and_removes_standbys_without_restarting_the_primary() {
    let up = Embedded::start();
    let env = up.env();
    ok(&["instance", "create", "grow", "--wait"], &env);
    let uri = credentials("grow", "uri", &env);
    psql(&uri, "create table t (id int); insert into t values (1)");
    let started = psql(&uri, "select pg_postmaster_start_time()");
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (uri, stop, reads, failures) =
            (uri.clone(), stop.clone(), reads.clone(), failures.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let o = std::process::Command::new("psql")
                    .args([uri.as_str(), "-Atc", "select count(*) from t"])
                    .output()
                    .unwrap();
                match o.status.success() {
                    true => reads.fetch_add(1, Ordering::Relaxed),
                    false => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    ok(
        &["instance", "update", "grow", "--replicas", "3", "--wait"],
        &env,
    );
    wait_streaming("grow", 2, &env);
    let ro = credentials("grow", "read-only-uri", &env);
    assert_eq!(psql(&ro, "select pg_is_in_recovery()"), "t");
    assert_eq!(psql(&ro, "select count(*) from t"), "1");
    ok(
        &["instance", "update", "grow", "--replicas", "1", "--wait"],
        &env,
    );
    // One server again: no members are reported.
    eventually("one server left", WAIT, || {
        members("grow", &env).is_empty().then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "reads failed on the primary"
    );
    assert_eq!(psql(&uri, "select pg_postmaster_start_time()"), started);
    let dirs: Vec<String> = std::fs::read_dir(up.data_dir.join("instances"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-m"))
        .collect();
    assert!(dirs.is_empty(), "standby directories left: {dirs:?}");
    assert_eq!(psql(&uri, "select count(*) from pg_replication_slots"), "0");
}

#[test]
fn bad_replica_counts_are_refused_naming_the_field() {
    let up = Embedded::start();
    let env = up.env();
    for (args, field) in [
        (vec!["--replicas", "0"], "spec.replicas"),
        (vec!["--replicas", "9"], "spec.replicas"),
        (
            vec!["--replicas", "3", "--config", "max_wal_senders=2"],
            "spec.config.max_wal_senders",
        ),
        (vec!["--synchronous", "on"], "spec.synchronous"),
        (
            vec!["--replicas", "2", "--synchronous", "2"],
            "spec.synchronous",
        ),
    ] {
        let mut all = vec!["instance", "create", "bad"];
        all.extend(args.iter().copied());
        let o = run(&all, &env);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(stderr(&o).contains(field), "{args:?}: {}", stderr(&o));
    }
    let list = json(&["instance", "list"], &env);
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
}

#[test]
fn a_switchover_under_writes_moves_the_primary_and_loses_no_acknowledged_commit() {
    let up = Embedded::start();
    let env = up.env();
    ok(
        &["instance", "create", "sw", "--replicas", "3", "--wait"],
        &env,
    );
    assert_eq!(wait_streaming("sw", 2, &env), "member-0");
    let rw = credentials("sw", "read-write-uri", &env);
    psql(&rw, "create table t (id bigint primary key)");
    let old_port = primary_port("sw", &env);

    let writer = AckedWriter::start(&rw);
    eventually("some writes before the switchover", WAIT, || {
        (psql(&rw, "select count(*) from t").parse::<u64>().unwrap() >= 5).then_some(())
    });
    ok(
        &["instance", "switchover", "sw", "--to", "member-2", "--wait"],
        &env,
    );
    let after = psql(&rw, "select count(*) from t").parse::<u64>().unwrap();
    eventually("writes after the switchover", WAIT, || {
        (psql(&rw, "select count(*) from t").parse::<u64>().unwrap() > after).then_some(())
    });
    let acked = writer.stop();

    // member-2 is the primary now, member-0 one of its standbys.
    assert_eq!(wait_streaming("sw", 2, &env), "member-2");
    assert_ne!(primary_port("sw", &env), old_port);
    let old = member_uri(&rw, old_port);
    assert_eq!(psql(&old, "select pg_is_in_recovery()"), "t");
    assert_eq!(psql(&rw, "select pg_is_in_recovery()"), "f");
    assert_none_lost(&rw, &acked);
    let (_, note) = history_notes("sw", &env)
        .into_iter()
        .find(|(e, _)| e == "SwitchedOver")
        .expect("the switchover in the history");
    assert!(
        note.contains("member-2 promoted, member-0 now a standby; writes refused for"),
        "{note}"
    );
    assert_eq!(instance("sw", &env)["state"], "Up");
    eventually("the members in /metrics", WAIT, || {
        let gauges = metrics(&env);
        (gauges
            .contains(r#"pgplane_member_primary{org="default",instance="sw",member="member-2"} 1"#)
            && gauges.contains(
                r#"pgplane_member_primary{org="default",instance="sw",member="member-0"} 0"#,
            )
            && gauges.contains(
                r#"pgplane_member_running{org="default",instance="sw",member="member-1"} 1"#,
            ))
        .then_some(())
    });

    // A switchover to what is not a standby is refused before anything moves.
    for (to, why) in [
        ("member-2", "already the primary"),
        ("member-7", "not a standby"),
    ] {
        let o = run(&["instance", "switchover", "sw", "--to", to], &env);
        assert!(!o.status.success(), "--to {to} was accepted");
        let err = stderr(&o);
        assert!(err.contains("to") && err.contains(why), "--to {to}: {err}");
    }
    // Without standbys there is nothing to switch over to.
    ok(&["instance", "create", "solo", "--wait"], &env);
    let o = run(&["instance", "switchover", "solo"], &env);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs a standby"), "{}", stderr(&o));
}

/// When each running member's postmaster started (epoch seconds), by port.
fn start_times(data_dir: &Path, uri: &str) -> std::collections::BTreeMap<u16, f64> {
    let mut times = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(data_dir.join("instances"))
        .unwrap()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path().join("postmaster.pid")) else {
            continue;
        };
        let Some(port) = text
            .lines()
            .nth(3)
            .and_then(|p| p.trim().parse::<u16>().ok())
        else {
            continue;
        };
        let started = psql(
            &member_uri(uri, port),
            "select extract(epoch from pg_postmaster_start_time())",
        );
        times.insert(port, started.parse().unwrap());
    }
    times
}

#[test]
fn a_change_that_needs_a_restart_restarts_the_standbys_first_then_switches_over() {
    let up = Embedded::start();
    let env = up.env();
    ok(
        &["instance", "create", "roll", "--replicas", "3", "--wait"],
        &env,
    );
    assert_eq!(wait_streaming("roll", 2, &env), "member-0");
    let rw = credentials("roll", "read-write-uri", &env);
    psql(&rw, "create table t (id bigint primary key)");
    let old_port = primary_port("roll", &env);
    let before = start_times(&up.data_dir, &rw);
    assert_eq!(before.len(), 3, "{before:?}");

    let writer = AckedWriter::start(&rw);
    let o = run(
        &[
            "instance",
            "update",
            "roll",
            "--extension",
            "pg_stat_statements",
            "--wait",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let after_update = psql(&rw, "select count(*) from t").parse::<u64>().unwrap();
    eventually("writes after the rolling restart", WAIT, || {
        (psql(&rw, "select count(*) from t").parse::<u64>().unwrap() > after_update).then_some(())
    });
    let acked = writer.stop();

    // Every member restarted, and the member promoted had restarted before
    // the old primary stopped (the other standby restarts once more, to
    // follow the new primary).
    let new_primary = wait_streaming("roll", 2, &env);
    assert_ne!(new_primary, "member-0");
    let new_port = primary_port("roll", &env);
    assert_ne!(new_port, old_port);
    let after = start_times(&up.data_dir, &rw);
    for (port, started) in &before {
        assert!(after[port] > *started, "port {port} was not restarted");
    }
    assert!(
        after[&new_port] < after[&old_port],
        "the new primary restarted after the old one: {after:?}"
    );
    assert_eq!(
        psql(&member_uri(&rw, old_port), "select pg_is_in_recovery()"),
        "t"
    );
    assert_eq!(
        psql(
            &rw,
            "select extname from pg_extension where extname = 'pg_stat_statements'"
        ),
        "pg_stat_statements"
    );
    for port in after.keys() {
        assert_eq!(
            psql(&member_uri(&rw, *port), "show shared_preload_libraries"),
            "pg_stat_statements",
            "port {port}"
        );
    }
    assert_none_lost(&rw, &acked);
    let (_, note) = history_notes("roll", &env)
        .into_iter()
        .rev()
        .find(|(_, n)| n.contains("rolling restart"))
        .expect("the rolling restart in the history");
    assert!(
        note.contains("shared_preload_libraries needed a restart")
            && note.contains(&format!(
                "{new_primary} promoted and member-0 restarted as its standby"
            )),
        "{note}"
    );
    assert_eq!(instance("roll", &env)["state"], "Up");

    // An asked-for restart rolls the same way, back to another member.
    ok(&["instance", "restart", "roll", "--wait"], &env);
    eventually("the asked-for restart in the history", WAIT, || {
        history_notes("roll", &env)
            .iter()
            .any(|(_, n)| n.contains("rolling restart (a restart was asked for)"))
            .then_some(())
    });
    assert_ne!(primary_port("roll", &env), new_port);
}

#[test]
fn with_synchronous_on_a_killed_primary_loses_no_acknowledged_commit() {
    let up = Embedded::start();
    let env = up.env();
    ok(
        &[
            "instance",
            "create",
            "ledger",
            "--replicas",
            "3",
            "--synchronous",
            "on",
            "--wait",
        ],
        &env,
    );
    wait_streaming("ledger", 2, &env);
    let rw = credentials("ledger", "read-write-uri", &env);
    assert_eq!(psql(&rw, "show synchronous_standby_names"), "ANY 1 (*)");
    eventually("both standbys quorum candidates", WAIT, || {
        (psql(
            &rw,
            "select count(*) from pg_stat_replication where sync_state = 'quorum'",
        ) == "2")
            .then_some(())
    });
    assert_eq!(instance("ledger", &env)["spec"]["synchronous"], "on");
    psql(&rw, "create table t (id bigint primary key)");

    let writer = AckedWriter::start(&rw);
    eventually("writes before the kill", WAIT, || {
        (psql(&rw, "select count(*) from t").parse::<u64>().unwrap() >= 20).then_some(())
    });
    let old_port = primary_port("ledger", &env);
    let (pid, _) = postmaster_on(&up.data_dir, old_port);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the failover in the history", WAIT, || {
        history_notes("ledger", &env)
            .into_iter()
            .find(|(event, _)| event == "FailedOver")
    });
    eventually("a write on the new primary", WAIT, || {
        succeeds(&rw, "insert into t values (1000000000000)").then_some(())
    });
    let acked = writer.stop();
    assert_none_lost(&rw, &acked);
    // The new primary asks the same of its standbys.
    assert_eq!(psql(&rw, "show synchronous_standby_names"), "ANY 1 (*)");
}

/// A client inserting ids 1, 2, … through a URI, one connection per
/// insert (so it follows the primary), that keeps every id the server
/// acknowledged.
struct AckedWriter {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl AckedWriter {
    /// Writes into `t (id bigint primary key)`.
    fn start(uri: &str) -> AckedWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let (uri, stopped) = (uri.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut acked, mut next) = (Vec::new(), 0u64);
            while !stopped.load(Ordering::Relaxed) {
                next += 1;
                if succeeds(&uri, &format!("insert into t values ({next})")) {
                    acked.push(next);
                }
            }
            acked
        });
        AckedWriter { stop, thread }
    }

    /// Stops; the acknowledged ids (at least one).
    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let acked = self.thread.join().unwrap();
        assert!(!acked.is_empty(), "no insert was acknowledged");
        acked
    }
}

/// Every id in `acked` is in `t` as `uri` reads it.
fn assert_none_lost(uri: &str, acked: &[u64]) {
    let present: std::collections::BTreeSet<u64> = psql(uri, "select id from t")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let lost: Vec<&u64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged commits lost: {lost:?}",
        lost.len(),
        acked.len()
    );
}
