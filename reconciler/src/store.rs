//! The control-plane store: instances, their history, tokens. Plain SQL via
//! sqlx; every function takes the connection (or transaction) it runs on.

use api::{HistoryEntry, Instance};
use chrono::{DateTime, Utc};
use domain::{
    BackupCatalog, ConnectionInfo, EventKind, InstanceSpec, ObservedSpec, RestoreSource, State,
};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ApiError, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: Uuid,
    pub org: String,
    pub name: String,
    pub data_plane: String,
    pub owner: String,
    pub state: String,
    pub spec: Json<InstanceSpec>,
    pub generation: i64,
    pub observed_generation: i64,
    pub observed: Option<Json<ObservedSpec>>,
    pub observed_at: Option<DateTime<Utc>>,
    pub connection: Option<Json<ConnectionInfo>>,
    pub error: Option<String>,
    pub restart_reasons: Json<Vec<String>>,
    pub backups: Option<Json<BackupCatalog>>,
    pub restore_source: Option<Json<RestoreSource>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl InstanceRow {
    pub fn state(&self) -> State {
        // A check constraint keeps the column to State::as_str values.
        State::parse(&self.state).expect("instances.state is checked by the schema")
    }

    pub fn into_api(self) -> Instance {
        let state = self.state();
        let backup = self
            .backups
            .as_ref()
            .map(|b| api::BackupSummary::of(&b.0, state != State::Deleted));
        Instance {
            backup,
            id: self.id,
            org: self.org,
            name: self.name,
            data_plane: self.data_plane,
            owner: self.owner,
            state,
            generation: self.generation,
            observed_generation: self.observed_generation,
            spec: self.spec.0,
            observed: self.observed.map(|j| j.0),
            observed_at: self.observed_at,
            connection: self.connection.map(|j| j.0),
            error: self.error,
            restart_reasons: self.restart_reasons.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The columns of an [`InstanceRow`], for queries that read one.
pub(crate) const COLUMNS: &str =
    "id, org, name, data_plane, owner, state, spec, generation, observed_generation, \
     observed, observed_at, connection, error, restart_reasons, backups, restore_source, \
     created_at, updated_at";

/// The instance a name (or id) refers to in an organisation: the live one,
/// else the most recently deleted one (so a deleted instance answers
/// "instance is deleted", not "not found"). Locks the row when `for_update`.
pub async fn find_instance(
    conn: &mut PgConnection,
    org: &str,
    name_or_id: &str,
    for_update: bool,
) -> Result<InstanceRow> {
    let lock = if for_update { " for update" } else { "" };
    let row = if let Ok(id) = Uuid::parse_str(name_or_id) {
        sqlx::query_as::<_, InstanceRow>(&format!(
            "select {COLUMNS} from instances where org = $1 and id = $2{lock}"
        ))
        .bind(org)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    } else {
        sqlx::query_as::<_, InstanceRow>(&format!(
            "select {COLUMNS} from instances where org = $1 and name = $2
             order by (state = 'Deleted'), created_at desc limit 1{lock}"
        ))
        .bind(org)
        .bind(name_or_id)
        .fetch_optional(&mut *conn)
        .await?
    };
    row.ok_or_else(|| ApiError::NotFound(name_or_id.to_owned()))
}

pub async fn find_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<InstanceRow>> {
    Ok(sqlx::query_as::<_, InstanceRow>(&format!(
        "select {COLUMNS} from instances where id = $1 for update"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

pub async fn list_instances(
    conn: &mut PgConnection,
    org: &str,
    state: Option<State>,
) -> Result<Vec<InstanceRow>> {
    let rows = match state {
        Some(s) => {
            sqlx::query_as::<_, InstanceRow>(&format!(
                "select {COLUMNS} from instances where org = $1 and state = $2 order by name"
            ))
            .bind(org)
            .bind(s.as_str())
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query_as::<_, InstanceRow>(&format!(
            "select {COLUMNS} from instances where org = $1 and state <> 'Deleted' order by name"
        ))
            .bind(org)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    Ok(rows)
}

pub struct NewInstance<'a> {
    pub restore_source: Option<&'a RestoreSource>,
    pub id: Uuid,
    pub org: &'a str,
    pub name: &'a str,
    pub data_plane: &'a str,
    pub owner: &'a str,
    pub state: State,
    pub spec: &'a InstanceSpec,
}

pub async fn insert_instance(conn: &mut PgConnection, new: NewInstance<'_>) -> Result<InstanceRow> {
    Ok(sqlx::query_as::<_, InstanceRow>(&format!(
        "insert into instances (id, org, name, data_plane, owner, state, spec, generation, restore_source)
         values ($1, $2, $3, $4, $5, $6, $7, 1, $8) returning {COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.org)
    .bind(new.name)
    .bind(new.data_plane)
    .bind(new.owner)
    .bind(new.state.as_str())
    .bind(Json(new.spec))
    .bind(new.restore_source.map(Json))
    .fetch_one(&mut *conn)
    .await?)
}

/// Records an accepted command: new state, spec and generation.
pub async fn apply_command(
    conn: &mut PgConnection,
    id: Uuid,
    state: State,
    spec: &InstanceSpec,
    generation: i64,
    restart_reasons: &[String],
    event: EventKind,
) -> Result<InstanceRow> {
    Ok(sqlx::query_as::<_, InstanceRow>(&format!(
        "update instances set state = $2, spec = $3, generation = $4, restart_reasons = $5, last_event = $6,
                error = case when $2 = 'Error' then error else null end,
                last_event_at = now(), updated_at = now(), resends = 0
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(state.as_str())
    .bind(Json(spec))
    .bind(generation)
    .bind(Json(restart_reasons))
    .bind(event.as_str())
    .fetch_one(&mut *conn)
    .await?)
}

pub struct HistoryRecord<'a> {
    pub instance_id: Uuid,
    pub from: Option<State>,
    pub event: &'a str,
    pub to: State,
    pub generation: i64,
    pub actor: &'a str,
    pub detail: Option<&'a str>,
}

pub async fn record_history(conn: &mut PgConnection, h: HistoryRecord<'_>) -> Result<()> {
    sqlx::query(
        "insert into instance_history (instance_id, from_state, event, to_state, generation, actor, detail)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(h.instance_id)
    .bind(h.from.map(State::as_str))
    .bind(h.event)
    .bind(h.to.as_str())
    .bind(h.generation)
    .bind(h.actor)
    .bind(h.detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    from_state: Option<String>,
    event: String,
    to_state: String,
    generation: i64,
    actor: String,
    detail: Option<String>,
    at: DateTime<Utc>,
}

pub async fn history(conn: &mut PgConnection, instance_id: Uuid) -> Result<Vec<HistoryEntry>> {
    let rows = sqlx::query_as::<_, HistoryRow>(
        "select from_state, event, to_state, generation, actor, detail, at
         from instance_history where instance_id = $1 order by id",
    )
    .bind(instance_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| HistoryEntry {
            from: r.from_state.as_deref().and_then(State::parse),
            event: api::HistoryEvent::from(r.event.as_str()),
            to: State::parse(&r.to_state)
                .expect("instance_history.to_state is checked by the schema"),
            generation: r.generation,
            actor: r.actor,
            detail: r.detail,
            at: r.at,
        })
        .collect())
}

/// Activity samples kept per instance (an hour at the default 30 s resync).
pub const ACTIVITY_SAMPLES: i64 = 120;

/// Keeps one activity sample, dropping the oldest beyond [`ACTIVITY_SAMPLES`].
pub async fn record_activity(
    conn: &mut PgConnection,
    instance_id: Uuid,
    activity: &domain::Activity,
) -> Result<()> {
    sqlx::query(
        "insert into instance_activity (instance_id, connections, transactions, database_bytes)
         values ($1, $2, $3, $4) on conflict do nothing",
    )
    .bind(instance_id)
    .bind(activity.connections)
    .bind(activity.transactions)
    .bind(activity.database_bytes)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "delete from instance_activity where instance_id = $1 and at <= (
             select at from instance_activity where instance_id = $1
             order by at desc offset $2 limit 1)",
    )
    .bind(instance_id)
    .bind(ACTIVITY_SAMPLES)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The kept activity samples, oldest first, with the transaction rate
/// between each and the one before.
pub async fn activity(
    conn: &mut PgConnection,
    instance_id: Uuid,
) -> Result<Vec<api::ActivitySample>> {
    let rows: Vec<(DateTime<Utc>, i64, i64, i64)> = sqlx::query_as(
        "select at, connections, transactions, database_bytes from instance_activity
         where instance_id = $1 order by at",
    )
    .bind(instance_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<api::ActivitySample> = Vec::with_capacity(rows.len());
    for (at, connections, transactions, database_bytes) in rows {
        let transactions_per_second = out.last().and_then(|prev| {
            let seconds = (at - prev.at).num_microseconds()? as f64 / 1e6;
            let done = transactions - prev.transactions;
            (seconds > 0.0 && done >= 0).then(|| done as f64 / seconds)
        });
        out.push(api::ActivitySample {
            at,
            connections,
            transactions,
            transactions_per_second,
            database_bytes,
        });
    }
    Ok(out)
}

/// A data plane's registered extension names and catalog (null for one
/// that registered names only).
type RegisteredExtensions = (
    Json<Vec<String>>,
    Option<Json<Vec<domain::AvailableExtension>>>,
);

/// The extension catalog a data plane registered; `None` when it never
/// registered. A data plane that registered names only gets entries known
/// by name (preload libraries from the reviewed table).
pub async fn data_plane_extensions(
    conn: &mut PgConnection,
    data_plane: &str,
) -> Result<Option<Vec<domain::AvailableExtension>>> {
    let row: Option<RegisteredExtensions> =
        sqlx::query_as("select extensions, catalog from data_planes where name = $1")
            .bind(data_plane)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(names, catalog)| match catalog {
        Some(c) => c.0,
        None => names
            .0
            .iter()
            .map(|n| domain::AvailableExtension::named(n))
            .collect(),
    }))
}

/// The names of the registered data planes, sorted.
pub async fn data_planes(conn: &mut PgConnection) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("select name from data_planes order by name")
            .fetch_all(&mut *conn)
            .await?,
    )
}
