//! The admin endpoint: `/health`, `/ready` and Prometheus `/metrics`, served
//! by a minimal HTTP/1.0 responder (no web framework in the operator).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Error kinds, the bounded label set of `reconcile_errors_total`.
const ERROR_KINDS: &[&str] = &["apply", "get", "delete", "status", "metadata", "finalizer"];

#[derive(Debug, Default)]
pub struct Metrics {
    ready: AtomicBool,
    leader: AtomicBool,
    reconciles: AtomicU64,
    errors: Mutex<[u64; ERROR_KINDS.len()]>,
}

impl Metrics {
    pub fn reconciled(&self) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
    }
    pub fn failed(&self, kind: &str) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors.lock().expect("metrics lock")[i] += 1;
        }
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP pgplane_operator_reconciles_total Reconciles started.\n");
        out.push_str("# TYPE pgplane_operator_reconciles_total counter\n");
        let _ = writeln!(
            out,
            "pgplane_operator_reconciles_total {}",
            self.reconciles.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP pgplane_operator_reconcile_errors_total Failed reconciles by error kind.\n",
        );
        out.push_str("# TYPE pgplane_operator_reconcile_errors_total counter\n");
        let errors = *self.errors.lock().expect("metrics lock");
        for (kind, n) in ERROR_KINDS.iter().zip(errors) {
            let _ = writeln!(
                out,
                "pgplane_operator_reconcile_errors_total{{kind=\"{kind}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# TYPE pgplane_operator_ready gauge\npgplane_operator_ready {}",
            u8::from(self.is_ready())
        );
        let _ = writeln!(
            out,
            "# HELP pgplane_operator_leader Whether this replica holds the leader Lease.\n# TYPE pgplane_operator_leader gauge\npgplane_operator_leader {}",
            u8::from(self.is_leader())
        );
        out
    }
}

/// Serves the admin endpoint until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let (mut stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let (code, body) = respond(&String::from_utf8_lossy(&buf[..n]), &metrics);
            let response = format!(
                "HTTP/1.0 {code}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

fn respond(request: &str, metrics: &Metrics) -> (&'static str, String) {
    let path = request.split_whitespace().nth(1).unwrap_or("");
    match path {
        "/health" => ("200 OK", "ok\n".to_owned()),
        "/ready" if metrics.is_ready() => ("200 OK", "ready\n".to_owned()),
        "/ready" => ("503 Service Unavailable", "not ready\n".to_owned()),
        "/metrics" => ("200 OK", metrics.render()),
        _ => ("404 Not Found", "not found\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_follows_the_controller_and_metrics_have_bounded_labels() {
        let m = Metrics::default();
        assert_eq!(
            respond("GET /ready HTTP/1.1", &m).0,
            "503 Service Unavailable"
        );
        m.set_ready(true);
        assert_eq!(respond("GET /ready HTTP/1.1", &m).0, "200 OK");
        assert_eq!(respond("GET /health HTTP/1.1", &m).0, "200 OK");
        m.reconciled();
        m.failed("apply");
        m.failed("not-a-kind");
        let text = respond("GET /metrics HTTP/1.1", &m).1;
        assert!(
            text.contains("pgplane_operator_reconciles_total 1\n"),
            "{text}"
        );
        assert!(text.contains("pgplane_operator_reconcile_errors_total{kind=\"apply\"} 1\n"));
        assert!(!text.contains("not-a-kind"));
    }
}
