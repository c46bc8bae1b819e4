//! Reading what the agent in an instance's pod observes: its status
//! endpoint (`GET /status` on [`AGENT_STATUS_PORT`], a
//! [`domain::AgentStatus`]), over plain HTTP/1.0 to the pod's IP. Read-only
//! and secret-free on both sides; the pod runs the instance's code, so what
//! it answers is a report about that instance only, never a command.

use std::time::Duration;

use crd::PostgresInstance;
use domain::AgentStatus;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The port of the agent's status endpoint in the pod.
pub const AGENT_STATUS_PORT: u16 = 8008;
/// Connecting, asking and reading the answer together; an agent that is
/// converging (a restart) answers after it, so this is generous.
pub const AGENT_STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// What the operator learned about the instance's pod.
#[derive(Debug, Clone, PartialEq)]
pub enum PodObservation {
    /// The agent answered.
    Agent(Box<AgentStatus>),
    /// No pod (stopped, or not created yet): nothing runs.
    NoPod,
    /// A pod, but its agent did not answer (starting, or an image without
    /// the endpoint); the reason is for the logs.
    Unreachable(String),
}

/// Asks the agent of the instance's first pod. Failing to read the Pod is
/// an error of the reconcile; an agent that does not answer is not.
pub async fn observe(
    client: &Client,
    pi: &PostgresInstance,
) -> Result<PodObservation, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pi.namespace().unwrap_or_default());
    let Some(pod) = pods.get_opt(&pod_name(pi)).await? else {
        return Ok(PodObservation::NoPod);
    };
    let Some(ip) = pod.status.and_then(|s| s.pod_ip) else {
        return Ok(PodObservation::Unreachable("the pod has no IP yet".into()));
    };
    Ok(
        match tokio::time::timeout(AGENT_STATUS_TIMEOUT, fetch(&ip, AGENT_STATUS_PORT)).await {
            Ok(Ok(status)) => PodObservation::Agent(Box::new(status)),
            Ok(Err(why)) => PodObservation::Unreachable(why),
            Err(_) => PodObservation::Unreachable(format!(
                "no answer from {ip}:{AGENT_STATUS_PORT} within {AGENT_STATUS_TIMEOUT:?}"
            )),
        },
    )
}

/// Pod annotation with the generation whose ConfigMap the pod should have.
pub const SPEC_GENERATION_ANNOTATION: &str = "pgplane.io/spec-generation";

/// Marks the instance's pod with the generation its agent should converge.
/// The kubelet refreshes a pod's mounted ConfigMaps when it syncs the pod,
/// which an update of the pod makes happen at once (otherwise only at its
/// sync period, a minute by default). The same value again is a no-op.
pub async fn nudge(client: &Client, pi: &PostgresInstance) -> Result<(), kube::Error> {
    let Some(generation) = pi.metadata.generation else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pi.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": { "annotations": { SPEC_GENERATION_ANNOTATION: generation.to_string() } },
    });
    match pods
        .patch(
            &pod_name(pi),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(drop),
    }
}

/// The StatefulSet's first pod (replicas beyond one are not built yet).
pub fn pod_name(pi: &PostgresInstance) -> String {
    format!("{}-0", crate::builders::statefulset_name(pi))
}

/// `GET /status` from `host:port`.
pub async fn fetch(host: &str, port: u16) -> Result<AgentStatus, String> {
    let at = format!("{host}:{port}");
    let mut stream = TcpStream::connect(&at)
        .await
        .map_err(|e| format!("connecting to {at}: {e}"))?;
    stream
        .write_all(format!("GET /status HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("asking {at}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("reading from {at}: {e}"))?;
    parse_answer(&answer).map_err(|why| format!("{at}: {why}"))
}

/// The status in an HTTP/1.x answer.
fn parse_answer(answer: &[u8]) -> Result<AgentStatus, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an incomplete answer")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered {status_line:?}"));
    }
    serde_json::from_slice(&answer[split + 4..]).map_err(|e| format!("not an agent status: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_or_refused_with_a_reason() {
        let ok =
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"convergedGeneration\":3}";
        assert_eq!(parse_answer(ok).unwrap().converged_generation, Some(3));
        let missing = b"HTTP/1.0 404 Not Found\r\n\r\n{}";
        assert!(parse_answer(missing).unwrap_err().contains("404"));
        assert!(parse_answer(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.0 200 OK\r\n\r\n42")
            .unwrap_err()
            .starts_with("not an agent status"));
    }
}
