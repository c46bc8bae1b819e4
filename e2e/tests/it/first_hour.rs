//! What a new user runs into first: a busy `--listen` port, a redirected
//! log, an endpoint typed without `http://` or pointing at another server,
//! and refused requests.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// `up` refuses before starting anything; well within this.
const REFUSED: Duration = Duration::from_secs(10);
/// `up` gives up after starting the state Postgres (initdb included).
const GIVES_UP: Duration = Duration::from_secs(120);

/// No Postgres runs on `DATA_DIR/state`: no pid file, or its pid is dead.
fn assert_no_state_postgres(data_dir: &Path) {
    let pid_file = data_dir.join("state/postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return;
    };
    let pid: i32 = text.lines().next().unwrap().trim().parse().unwrap();
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "the state Postgres (pid {pid}, {}) is still running",
        pid_file.display()
    );
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn up_on_a_busy_port_fails_at_once_and_starts_nothing() {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("demo");
    let log = scratch.path().join("up.log");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();

    let mut up = spawn(
        "pgplane up",
        &[
            "up",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &[],
        &log,
    );
    assert_eq!(up.wait_exit(REFUSED), Some(1));

    let text = std::fs::read_to_string(&log).unwrap();
    let errors = error_lines(&text);
    assert_eq!(errors.len(), 1, "{text}");
    let port: u16 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(
        errors[0].starts_with(&format!(
            "error: cannot listen on {listen}: the address is already in use"
        )) && errors[0].ends_with(&format!("--listen 127.0.0.1:{}", port + 1)),
        "{text}"
    );
    assert!(!text.contains("starting the state Postgres"), "{text}");
    assert_no_state_postgres(&data_dir);
}

#[test]
fn a_failure_after_the_state_postgres_started_stops_it() {
    let scratch = scratch_dir();
    let data_dir = scratch.path().join("demo");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(data_dir.join("pgplane.key"), "not a key\n").unwrap();
    let log = scratch.path().join("up.log");

    let listen = format!("127.0.0.1:{}", free_port());
    let mut up = spawn(
        "pgplane up",
        &[
            "up",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &[],
        &log,
    );
    assert_eq!(up.wait_exit(GIVES_UP), Some(1));

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("starting the state Postgres"), "{text}");
    assert_eq!(error_lines(&text).len(), 1, "{text}");
    assert!(data_dir.join("state/PG_VERSION").exists(), "{text}");
    assert_no_state_postgres(&data_dir);
}

/// A server that answers every request with an HTML 404 page.
fn html_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = "<!DOCTYPE html>\n<html><head><title>Not Found</title></head>\
                        <body><h1>Not Found</h1><p>nothing here</p></body></html>\n";
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn an_endpoint_that_is_not_pgplane_is_named_without_its_html() {
    let addr = html_server();
    let o = run(
        &["instance", "list"],
        &[("PGPLANE_ENDPOINT", &addr), ("PGPLANE_TOKEN", "pgp_x")],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "error: the server at http://{addr} answered HTTP 404 with text/html: \
             is this a pgplane control plane?\n"
        )),
        "{err}"
    );
    assert!(err.contains("PGPLANE_ENDPOINT"), "{err}");
    assert!(!err.contains('<'), "the body is not shown: {err}");
}

#[test]
fn the_cli_on_a_fresh_up() {
    let up = Embedded::start();

    // The log is a file: no colour codes in it.
    let log = std::fs::read_to_string(&up.log).unwrap();
    assert!(log.contains("control plane listening"), "{log}");
    assert!(!log.contains("\x1b["), "colour codes in the log: {log:?}");

    // `host:port` means `http://host:port`.
    let env = up.env();
    let endpoint = env
        .iter()
        .find(|(k, _)| *k == "PGPLANE_ENDPOINT")
        .unwrap()
        .1;
    let token = env.iter().find(|(k, _)| *k == "PGPLANE_TOKEN").unwrap().1;
    let bare = endpoint.strip_prefix("http://").unwrap();
    let o = run(
        &["instance", "list"],
        &[("PGPLANE_ENDPOINT", bare), ("PGPLANE_TOKEN", token)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "no instances\n");

    // Each problem of a refused request reads once.
    let o = run(
        &[
            "instance",
            "create",
            "orders",
            "--config",
            "port=5433",
            "--config",
            "shared_buffer=128MB",
        ],
        &env,
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().next(), Some("error: invalid request"), "{err}");
    for field in ["spec.config.port:", "spec.config.shared_buffer:"] {
        assert_eq!(err.matches(field).count(), 1, "{field} in {err}");
    }
    assert!(err.contains("did you mean \"shared_buffers\"?"), "{err}");

    let o = run(&["instance", "create", "Orders!"], &env);
    assert!(!o.status.success());
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let unique: std::collections::BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(lines.len(), unique.len(), "a line repeats: {err}");

    // Extensions are known once the conductor has registered the data plane.
    eventually("the conductor to register", Duration::from_secs(30), || {
        std::fs::read_to_string(&up.log)
            .unwrap()
            .contains("conductor consuming")
            .then_some(())
    });
    let o = run(
        &["instance", "create", "orders", "--extension", "hstor"],
        &env,
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("extension \"hstor\" is not available on data plane \"local\" (did you mean \"hstore\"?); available: "),
        "{err}"
    );
    assert_eq!(err.matches("available: ").count(), 1, "{err}");
    assert_eq!(err.matches("hstore,").count(), 1, "{err}");
}
