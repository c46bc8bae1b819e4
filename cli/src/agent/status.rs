//! The agent's read-only status endpoint in the pod: `GET /status` answers
//! what Postgres runs ([`domain::AgentStatus`]: the observed spec, the
//! server's start time, the generation of the spec converged, the restarts
//! after the server ended on its own), observed at
//! the time of the request. The operator reads it on every reconcile.
//! `GET /ready` is the pod's readiness: 200 once the first spec converged
//! and while Postgres answers, 503 otherwise. It
//! holds no secret, and changes nothing. A minimal HTTP/1.0 responder: one
//! request per connection.

use std::sync::Arc;
use std::time::Duration;

use agent::Agent;
use domain::{AgentStatus, InstanceSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The port the operator asks (`--status-addr`'s default).
pub const DEFAULT_ADDR: &str = "0.0.0.0:8008";
/// The longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Postgres may take to answer a readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the converge loop last did. The loop holds the lock while it
/// converges, so an observation never runs in the middle of a restart.
#[derive(Debug, Default)]
pub struct Converged {
    pub spec: Option<InstanceSpec>,
    pub generation: Option<i64>,
    pub error: Option<String>,
    /// How often the server was started again after it ended on its own.
    pub restarts: u32,
    /// How it last ended on its own.
    pub last_exit: Option<String>,
}

/// What the status endpoint shares with the converge loop.
#[derive(Debug, Default)]
pub struct Progress {
    pub converged: Mutex<Converged>,
    /// Set once the first spec has been converged: from then on the pod
    /// is ready whenever Postgres answers.
    pub first_converged: std::sync::atomic::AtomicBool,
}

pub type Shared = Arc<Progress>;

/// Serves `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    agent: Arc<Agent>,
    converged: Shared,
    shutdown: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(answer(stream, agent.clone(), converged.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "accepting a status connection failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn answer(mut stream: TcpStream, agent: Arc<Agent>, converged: Shared) {
    let Ok(Some(path)) = tokio::time::timeout(READ_TIMEOUT, request_path(&mut stream))
        .await
        .unwrap_or(Ok(None))
    else {
        return;
    };
    let (code, body) = match path.as_str() {
        "/status" => {
            let status = status(&agent, &converged).await;
            (
                "200 OK",
                serde_json::to_string(&status).expect("a status serializes"),
            )
        }
        "/health" => ("200 OK", "{}".to_owned()),
        // Ready: the spec converged once (the client role has its password
        // and the configuration its values) and Postgres answers now.
        "/ready" => match ready(&agent, &converged).await {
            true => ("200 OK", "{}".to_owned()),
            false => ("503 Service Unavailable", "{}".to_owned()),
        },
        _ => ("404 Not Found", "{}".to_owned()),
    };
    let response = format!(
        "HTTP/1.0 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The path of a `GET` request; `None` for anything else.
async fn request_path(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    Ok(match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => Some(path.to_owned()),
        _ => None,
    })
}

async fn ready(agent: &Agent, progress: &Shared) -> bool {
    progress
        .first_converged
        .load(std::sync::atomic::Ordering::Acquire)
        && agent.answers(READY_TIMEOUT).await
}

/// Observes the server now, for the spec last converged.
pub async fn status(agent: &Agent, converged: &Shared) -> AgentStatus {
    let converged = converged.converged.lock().await;
    let mut status = AgentStatus {
        converged_generation: converged.generation,
        error: converged.error.clone(),
        restarts: (converged.restarts > 0).then_some(converged.restarts),
        last_exit: converged.last_exit.clone(),
        ..AgentStatus::default()
    };
    let Some(spec) = &converged.spec else {
        return status;
    };
    match agent.observe_started(spec).await {
        Ok((observed, started_at)) => {
            status.observed = Some(observed);
            status.started_at = started_at;
        }
        Err(e) => status.error = Some(format!("observing: {:#}", anyhow::Error::new(e))),
    }
    status
}
