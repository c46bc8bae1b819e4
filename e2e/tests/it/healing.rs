//! `pgplane up` heals by itself: a killed server is restarted and the
//! history says so; the sequences that used to leave an instance stuck in a
//! transitional state settle.

use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(120);

fn postmaster_of(instances: &std::path::Path, port: u64) -> i32 {
    std::fs::read_dir(instances)
        .unwrap()
        .map(|e| e.unwrap().path().join("postmaster.pid"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find(|pid_file| pid_file.lines().nth(3) == Some(&port.to_string()))
        .and_then(|pid_file| pid_file.lines().next()?.parse().ok())
        .expect("the instance's postmaster.pid")
}

#[test]
fn a_killed_server_comes_back_and_no_sequence_leaves_an_instance_stuck() {
    let up = Embedded::start();
    let env = up.env();
    let data_dir = &up.data_dir;

    // kill -9 of the postmaster: restarted, still Up, the history says so.
    ok(&["instance", "create", "orders", "--wait"], &env);
    let uri = ok(&["instance", "credentials", "orders"], &env)
        .trim()
        .to_owned();
    let got = json(&["instance", "get", "orders"], &env);
    let port = got["connection"]["port"].as_u64().unwrap();
    let pid = postmaster_of(&data_dir.join("instances"), port);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let entry = eventually("the crash in the history", WAIT, || {
        let history = json(&["instance", "history", "orders"], &env);
        history["items"]
            .as_array()?
            .iter()
            .find(|h| {
                h["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("crashed: killed by signal 9"))
            })
            .cloned()
    });
    assert_eq!(entry["event"], "Recovered", "{entry}");
    assert_eq!(entry["to"], "Up", "{entry}");
    assert!(entry["detail"].as_str().unwrap().contains("restarted in"));
    assert_eq!(psql(&uri, "select 1"), "1");
    assert_ne!(postmaster_of(&data_dir.join("instances"), port), pid);
    assert_eq!(json(&["instance", "get", "orders"], &env)["state"], "Up");

    // A crash, then a restart: settles in Up (used to stay Restarting).
    let pid = postmaster_of(&data_dir.join("instances"), port);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    ok(&["instance", "restart", "orders", "--wait"], &env);
    assert_eq!(json(&["instance", "get", "orders"], &env)["state"], "Up");
    assert_eq!(psql(&uri, "select 1"), "1");

    // A create that fails on the data plane, fixed by an update: settles
    // in Up (used to stay Configuring or Restarting after the data plane's
    // `Created`).
    let o = run(
        &["instance", "create", "big", "--memory", "64Ti", "--wait"],
        &env,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("more memory than this data plane has"),
        "{}",
        stderr(&o)
    );
    assert_eq!(json(&["instance", "get", "big"], &env)["state"], "Error");
    ok(
        &["instance", "update", "big", "--memory", "512Mi", "--wait"],
        &env,
    );
    let big = json(&["instance", "get", "big"], &env);
    assert_eq!(big["state"], "Up", "{big}");
    let history = json(&["instance", "history", "big"], &env);
    let transitions: Vec<String> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{} {} {}", h["from"], h["event"], h["to"]))
        .collect();
    assert!(
        transitions.iter().any(
            |t| t == r#""Configuring" "Created" "Up""# || t == r#""Restarting" "Created" "Up""#
        ),
        "the data plane's Created completes the update: {transitions:?}"
    );
}
