//! The admin endpoint: `/health`, `/ready` and Prometheus `/metrics`, served
//! by a minimal HTTP/1.0 responder (no web framework in the operator).

use std::sync::Arc;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// The label set of `reconcile_errors_total`: [`Error::kind`], bounded by
/// the variants of [`Error`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

/// The operator's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    ready: Gauge,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let ready = Gauge::default();
        let leader = Gauge::default();
        // Counters get their `_total` suffix from the encoder, and help
        // texts their full stop from the registry.
        let mut registry = Registry::default();
        registry.register(
            "pgplane_operator_reconciles",
            "Reconciles started",
            reconciles.clone(),
        );
        registry.register(
            "pgplane_operator_reconcile_errors",
            "Failed reconciles by error kind",
            errors.clone(),
        );
        registry.register(
            "pgplane_operator_ready",
            "Whether this replica is ready, as /ready answers",
            ready.clone(),
        );
        registry.register(
            "pgplane_operator_leader",
            "Whether this replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            ready,
            leader,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self) {
        self.reconciles.inc();
    }
    /// Counts a failed reconcile under its error's kind.
    pub fn failed(&self, error: &Error) {
        self.errors
            .get_or_create(&ErrorLabels { kind: error.kind() })
            .inc();
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }
    pub fn is_ready(&self) -> bool {
        self.ready.get() != 0
    }
    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
    pub fn is_leader(&self) -> bool {
        self.leader.get() != 0
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String cannot fail");
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
                "HTTP/1.0 {code}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n{body}",
                prometheus_text::CONTENT_TYPE,
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
    fn ready_follows_the_controller() {
        let m = Metrics::default();
        assert_eq!(
            respond("GET /ready HTTP/1.1", &m).0,
            "503 Service Unavailable"
        );
        m.set_ready(true);
        assert_eq!(respond("GET /ready HTTP/1.1", &m).0, "200 OK");
        assert_eq!(respond("GET /health HTTP/1.1", &m).0, "200 OK");
        assert!(m.is_ready());
        m.set_leader(true);
        assert!(m.is_leader());
        let text = respond("GET /metrics HTTP/1.1", &m).1;
        assert!(text.contains("pgplane_operator_ready 1\n"), "{text}");
        assert!(text.contains("pgplane_operator_leader 1\n"), "{text}");
    }

    #[test]
    fn metrics_keep_their_names_types_and_help() {
        let m = Metrics::default();
        m.reconciled();
        // A labelled family is exposed from its first sample on.
        assert!(!m.render().contains("reconcile_errors"));
        m.failed(&Error::MissingMetadata("a name"));
        let text = m.render();
        for line in [
            "# HELP pgplane_operator_reconciles_total Reconciles started.\n",
            "# TYPE pgplane_operator_reconciles_total counter\n",
            "pgplane_operator_reconciles_total 1\n",
            "# HELP pgplane_operator_reconcile_errors_total Failed reconciles by error kind.\n",
            "# TYPE pgplane_operator_reconcile_errors_total counter\n",
            "# TYPE pgplane_operator_ready gauge\n",
            "pgplane_operator_ready 0\n",
            "# HELP pgplane_operator_leader Whether this replica holds the leader Lease.\n",
            "# TYPE pgplane_operator_leader gauge\n",
            "pgplane_operator_leader 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert_eq!(m.reconciles(), 1);
    }

    #[test]
    fn every_error_kind_is_counted_under_its_own_label() {
        let m = Metrics::default();
        let metadata = Error::MissingMetadata("a namespace");
        let finalizer = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject));
        m.failed(&metadata);
        m.failed(&finalizer);
        m.failed(&finalizer);
        let text = m.render();
        for (error, n) in [(&metadata, 1), (&finalizer, 2)] {
            let line = format!(
                "pgplane_operator_reconcile_errors_total{{kind=\"{}\"}} {n}\n",
                error.kind()
            );
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
    }
}
