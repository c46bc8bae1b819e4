//! `GET /api/v1/events`: instance changes as server-sent events, for one
//! organisation (a bearer token's or a console session's).
//!
//! One poller per control plane reads what changed since its last look
//! (`instances.updated_at`, indexed) every [`POLL_EVERY`] and broadcasts it;
//! each stream keeps its organisation's changes. The poller runs only while
//! someone listens. Commands and reports both write `updated_at` in the
//! transaction that changes the instance, so every change is seen; the
//! poller looks [`OVERLAP`] back (a transaction's `now()` is its start, and
//! it may commit later) and sends a row only when it differs from what it
//! sent for it last.
//!
//! Each event is `event: instance`, `id:` the change's time (RFC 3339), and
//! `data:` an [`InstanceChange`] in JSON. A client that reconnects with
//! `Last-Event-ID` (browsers do), or passes `?since=RFC3339`, first gets its
//! organisation's changes since then. A client too slow to keep up gets
//! `event: resync` and should re-read the list.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State as AxumState};
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// How often the poller looks for changes.
pub const POLL_EVERY: Duration = Duration::from_millis(300);
/// How far back each look reaches past the newest change already seen.
const OVERLAP: chrono::Duration = chrono::Duration::seconds(5);
/// Changes buffered per stream before it is told to resync.
const BUFFER: usize = 4096;

/// What a listener learns about one instance's change.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct InstanceChange {
    pub id: Uuid,
    #[serde(skip)]
    pub org: String,
    pub name: String,
    pub state: String,
    pub owner: String,
    pub generation: i64,
    pub observed_generation: i64,
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const CHANGE_COLUMNS: &str =
    "id, org, name, state, owner, generation, observed_generation, error, updated_at";

/// The control plane's instance-change broadcaster.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    sender: Mutex<Option<broadcast::Sender<Arc<InstanceChange>>>>,
    closed: CancellationToken,
}

impl Events {
    pub fn new(pool: PgPool) -> Events {
        Events {
            inner: Arc::new(Inner {
                pool,
                sender: Mutex::new(None),
                closed: CancellationToken::new(),
            }),
        }
    }

    /// Ends every stream and the poller (at shutdown: open streams would
    /// otherwise hold the server's graceful shutdown forever).
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<InstanceChange>> {
        let mut sender = self.inner.sender.lock().expect("events lock");
        if let Some(tx) = sender.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(BUFFER);
        *sender = Some(tx.clone());
        let inner = self.inner.clone();
        tokio::spawn(async move { poll(inner, tx).await });
        rx
    }
}

/// Polls until nobody listens (or [`Events::close`]).
async fn poll(inner: Arc<Inner>, tx: broadcast::Sender<Arc<InstanceChange>>) {
    let mut seen = Seen::default();
    let mut high_water: Option<DateTime<Utc>> = None;
    loop {
        tokio::select! {
            _ = inner.closed.cancelled() => break,
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
        {
            let mut sender = inner.sender.lock().expect("events lock");
            if tx.receiver_count() == 0 {
                *sender = None;
                return;
            }
        }
        let since = match high_water {
            Some(t) => t,
            None => match sqlx::query_scalar("select now()")
                .fetch_one(&inner.pool)
                .await
            {
                Ok(now) => now,
                Err(e) => {
                    tracing::warn!(error = %e, "event poller cannot read the clock");
                    continue;
                }
            },
        };
        high_water = Some(since);
        match changed_since(&inner.pool, None, since - OVERLAP).await {
            Ok(rows) => {
                for row in rows {
                    high_water = high_water.max(Some(row.updated_at));
                    if seen.is_new(&row) {
                        let _ = tx.send(Arc::new(row));
                    }
                }
                if let Some(t) = high_water {
                    seen.forget_before(t - OVERLAP - OVERLAP);
                }
            }
            Err(e) => tracing::warn!(error = %e, "event poller cannot read changes"),
        }
    }
    *inner.sender.lock().expect("events lock") = None;
}

/// What the poller sent last per instance, for the overlap window.
#[derive(Default)]
struct Seen(HashMap<Uuid, InstanceChange>);

impl Seen {
    /// Whether `row` shows something a listener has not been sent: a row
    /// touched without a visible change (a periodic re-observation) is not
    /// news.
    fn is_new(&mut self, row: &InstanceChange) -> bool {
        let news = self.0.get(&row.id).is_none_or(|sent| !sent.looks_like(row));
        self.0.insert(row.id, row.clone());
        news
    }

    fn forget_before(&mut self, t: DateTime<Utc>) {
        self.0.retain(|_, row| row.updated_at >= t);
    }
}

impl InstanceChange {
    /// Equal in everything a listener sees but the time.
    fn looks_like(&self, other: &InstanceChange) -> bool {
        InstanceChange {
            updated_at: other.updated_at,
            ..self.clone()
        } == *other
    }
}

async fn changed_since(
    pool: &PgPool,
    org: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<InstanceChange>, sqlx::Error> {
    sqlx::query_as::<_, InstanceChange>(&format!(
        "select {CHANGE_COLUMNS} from instances
         where updated_at > $1 and ($2::text is null or org = $2)
         order by updated_at limit 10000"
    ))
    .bind(since)
    .bind(org)
    .fetch_all(pool)
    .await
}

/// A bearer token or a console session.
pub struct Listener(Caller);

impl FromRequestParts<AppState> for Listener {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Caller::from_request_parts(parts, state).await.map(Listener);
        }
        use axum::extract::OptionalFromRequestParts;
        match <super::session::Session as OptionalFromRequestParts<AppState>>::from_request_parts(
            parts, state,
        )
        .await
        {
            Ok(Some(session)) => Ok(Listener(session.caller)),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// Send the organisation's changes since this time first (RFC 3339).
    since: Option<DateTime<Utc>>,
}

/// Instance changes of the caller's organisation as server-sent events
/// (`event: instance`, `data:` the instance's id, name, state, owner,
/// generations, error and `updatedAt`). Authenticated by a bearer token or
/// a console session. `Last-Event-ID` or `since` first replays the changes
/// since then; `event: resync` means changes were missed: re-read the list.
#[utoipa::path(get, path = "/api/v1/events", params(StreamQuery),
    responses((status = 200, content_type = "text/event-stream",
        description = "a stream of `instance` events, never ending"),
        (status = 401, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stream(
    AxumState(state): AxumState<AppState>,
    Listener(caller): Listener,
    headers: axum::http::HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc));
    // Subscribe before catching up, so nothing falls between the two.
    let rx = state.events.subscribe();
    let catch_up = match last_event_id.or(query.since) {
        Some(since) => changed_since(&state.pool, Some(&caller.org), since - OVERLAP).await?,
        None => Vec::new(),
    };
    let closed = state.events.inner.closed.clone();
    let org = caller.org;
    let start = Event::default()
        .event("hello")
        .retry(Duration::from_secs(1))
        .data("{}");
    let stream = futures::stream::once(async move { Ok(start) }).chain(futures::stream::unfold(
        StreamState {
            rx,
            catch_up: catch_up.into_iter(),
            closed,
            org,
        },
        next_event,
    ));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct StreamState {
    rx: broadcast::Receiver<Arc<InstanceChange>>,
    catch_up: std::vec::IntoIter<InstanceChange>,
    closed: CancellationToken,
    org: String,
}

async fn next_event(mut s: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    if let Some(change) = s.catch_up.next() {
        return Some((Ok(change_event(&change)), s));
    }
    loop {
        let received = tokio::select! {
            _ = s.closed.cancelled() => return None,
            r = s.rx.recv() => r,
        };
        match received {
            Ok(change) if change.org == s.org => return Some((Ok(change_event(&change)), s)),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                return Some((Ok(Event::default().event("resync").data("{}")), s))
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

fn change_event(change: &InstanceChange) -> Event {
    let data = serde_json::to_string(change).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .event("instance")
        .id(change.updated_at.to_rfc3339())
        .data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(state: &str, generation: i64, at: DateTime<Utc>) -> InstanceChange {
        InstanceChange {
            id: Uuid::nil(),
            org: "acme".into(),
            name: "orders".into(),
            state: state.into(),
            owner: "api".into(),
            generation,
            observed_generation: generation,
            error: None,
            updated_at: at,
        }
    }

    #[test]
    fn only_visible_changes_are_news() {
        let t0 = Utc::now();
        let mut seen = Seen::default();
        assert!(seen.is_new(&change("Submitted", 1, t0)));
        assert!(
            !seen.is_new(&change("Submitted", 1, t0)),
            "read again in the overlap"
        );
        assert!(
            !seen.is_new(&change("Submitted", 1, t0 + chrono::Duration::seconds(1))),
            "touched, not changed"
        );
        assert!(seen.is_new(&change("Up", 1, t0 + chrono::Duration::seconds(2))));
        assert!(seen.is_new(&change("Up", 2, t0 + chrono::Duration::seconds(3))));
        seen.forget_before(t0 + chrono::Duration::seconds(10));
        assert!(seen.0.is_empty());
    }

    #[test]
    fn an_event_names_its_time_and_leaves_the_organisation_out() {
        let event = serde_json::to_value(change("Up", 3, Utc::now())).unwrap();
        assert_eq!(event["state"], "Up");
        assert_eq!(event["observedGeneration"], 3);
        assert!(event.get("org").is_none());
    }
}
