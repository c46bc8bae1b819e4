//! `pgplane instance … --wait` follows the control plane's event stream
//! (`GET /api/v1/events`, the stream the console listens to) and falls back
//! to polling when a control plane does not offer it or the stream breaks.
//! The fallbacks are exercised through a small HTTP proxy in front of a real
//! `pgplane up` that answers 404 for the stream, or cuts it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::support::*;

/// What the proxy does to `GET /api/v1/events`.
#[derive(Clone, Copy)]
enum Events {
    /// 404, as a control plane without the stream answers.
    Missing,
    /// Forwarded until the first bytes (the `hello`), then cut.
    Cut,
}

/// A proxy to `upstream` on a free port, one thread per connection, every
/// exchange on a connection of its own (`Connection: close`).
fn proxy(upstream: String, events: Events) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let _ = exchange(client, &upstream, events);
            });
        }
    });
    format!("http://{addr}")
}

fn exchange(mut client: TcpStream, upstream: &str, events: Events) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            headers.push(line);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let is_events = path.starts_with("/api/v1/events");
    if is_events && matches!(events, Events::Missing) {
        let body = r#"{"code":"not_found","message":"path \"/api/v1/events\" not found"}"#;
        write!(
            client,
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    let mut server = TcpStream::connect(upstream.trim_start_matches("http://"))?;
    let mut head = request_line;
    for h in headers {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("connection: close\r\n\r\n");
    server.write_all(head.as_bytes())?;
    server.write_all(&body)?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = server.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        client.write_all(&buf[..n])?;
        if is_events && matches!(events, Events::Cut) {
            // The stream's head and hello went through; now it breaks.
            return client.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The environment of `up`, with the endpoint replaced and `--wait`'s
/// choice logged.
fn env_via<'a>(up: &'a Embedded, endpoint: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut env: Vec<(&str, &str)> = up
        .env()
        .into_iter()
        .filter(|(k, _)| *k != "PGPLANE_ENDPOINT")
        .collect();
    env.push(("PGPLANE_ENDPOINT", endpoint));
    env.push(("RUST_LOG", "api::wait=debug"));
    env
}

#[test]
fn wait_follows_the_event_stream_and_polls_without_it() {
    let up = Embedded::start();
    let direct = up
        .env()
        .into_iter()
        .find(|(k, _)| *k == "PGPLANE_ENDPOINT")
        .unwrap()
        .1
        .to_owned();

    // On the stream: the same transitions and exit code as polling.
    let env = env_via(&up, &direct);
    let started = std::time::Instant::now();
    let o = run(
        &[
            "instance",
            "create",
            "w1",
            "--config",
            "work_mem=8MB",
            "--wait",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    eprintln!("create on the stream: {:?}", started.elapsed());
    let err = stderr(&o);
    assert!(err.contains("following the event stream"), "{err}");
    assert!(err.contains("w1: Submitted → Up (generation 1)"), "{err}");
    let o = run(
        &[
            "instance",
            "update",
            "w1",
            "--config",
            "work_mem=16MB",
            "--wait",
            "-o",
            "json",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("following the event stream"), "{err}");
    assert!(err.contains("Configuring → Up"), "{err}");
    let done: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(done["state"], "Up");
    assert_eq!(done["observedGeneration"], 2);
    assert_eq!(
        done["observed"]["config"]["work_mem"], "16MB",
        "the whole instance as it is once settled: {done}"
    );

    // A control plane without the stream: polled, same output.
    let missing = proxy(direct.clone(), Events::Missing);
    let env = env_via(&up, &missing);
    let started = std::time::Instant::now();
    let o = run(&["instance", "stop", "w1", "--wait"], &env);
    eprintln!("stop by polling: {:?}", started.elapsed());
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no event stream; polling"), "{err}");
    assert!(!err.contains("following the event stream"), "{err}");
    assert!(
        err.contains("w1: Stopping → Stopped (generation 3)"),
        "{err}"
    );

    // A stream that breaks: polling takes over.
    let cut = proxy(direct.clone(), Events::Cut);
    let env = env_via(&up, &cut);
    let started = std::time::Instant::now();
    let o = run(&["instance", "start", "w1", "--wait"], &env);
    eprintln!("start on a cut stream: {:?}", started.elapsed());
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("following the event stream"), "{err}");
    assert!(
        err.contains("the event stream ended; polling")
            || err.contains("the event stream broke; polling"),
        "{err}"
    );
    assert!(err.contains("w1: Starting → Up (generation 4)"), "{err}");

    // A timeout still says where the instance stood (a command the data
    // plane cannot finish in 1 ms).
    let env = env_via(&up, &direct);
    let o = run(
        &["instance", "restart", "w1", "--wait", "--timeout", "1ms"],
        &env,
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "a timeout has its own exit status"
    );
    assert!(stderr(&o).contains("timed out after"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("last state Restarting"),
        "{}",
        stderr(&o)
    );

    let started = std::time::Instant::now();
    let o = run(
        &["instance", "delete", "w1", "--wait"],
        &env_via(&up, &direct),
    );
    eprintln!("delete: {:?}", started.elapsed());
    assert!(o.status.success(), "{}", stderr(&o));
    eventually("w1 deleted", Duration::from_secs(5), || {
        let v = json(&["instance", "get", "w1"], &up.env());
        (v["state"] == "Deleted").then_some(())
    });
}
