//! Waiting on what the API reports, by watching it.

use std::fmt::Debug;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// Watches the object `name` until `check` returns `Some`: `Ok(value)` ends
/// the wait, `Err(reason)` fails it at once. Fails with the last state seen
/// when `deadline` passes first.
pub async fn wait_for<K, T, F>(
    api: &Api<K>,
    name: &str,
    deadline: Duration,
    mut check: F,
) -> Result<T, String>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(&K) -> Option<Result<T, String>>,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), config).applied_objects();
    futures::pin_mut!(stream);
    let mut last = None;
    let waited = tokio::time::timeout(deadline, async {
        loop {
            match stream.try_next().await {
                Ok(Some(object)) => {
                    if let Some(outcome) = check(&object) {
                        return outcome;
                    }
                    last = Some(object);
                }
                Ok(None) => return Err("the watch ended".to_owned()),
                Err(e) => return Err(format!("watching: {e}")),
            }
        }
    })
    .await;
    match waited {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "not there after {deadline:?}; last seen: {}",
            last.map(|o| format!("{o:?}"))
                .unwrap_or_else(|| "nothing".to_owned())
        )),
    }
}

/// Container states that do not go away by waiting.
const HOPELESS: &[&str] = &[
    "CrashLoopBackOff",
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "InvalidImageName",
];

/// Waits for the pod's Ready condition; fails at once when one of its
/// containers cannot start or has exited.
pub async fn wait_pod_ready(
    pods: &Api<Pod>,
    name: &str,
    deadline: Duration,
) -> Result<Pod, String> {
    wait_for(pods, name, deadline, |pod| {
        let status = pod.status.as_ref()?;
        for c in status.container_statuses.iter().flatten() {
            let state = c.state.as_ref()?;
            if let Some(waiting) = &state.waiting {
                let reason = waiting.reason.as_deref().unwrap_or_default();
                if HOPELESS.contains(&reason) {
                    return Some(Err(format!(
                        "container {} is {reason}: {}",
                        c.name,
                        waiting.message.as_deref().unwrap_or_default()
                    )));
                }
            }
            if let Some(t) = &state.terminated {
                return Some(Err(format!(
                    "container {} exited with {} ({})",
                    c.name,
                    t.exit_code,
                    t.reason.as_deref().unwrap_or_default()
                )));
            }
        }
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then(|| Ok(pod.clone()))
    })
    .await
}
