//! The state-machine driver for user commands.
//!
//! Each command runs in one transaction: lock the instance, ask the pure
//! [`domain::transition`] whether the command is allowed (before anything is
//! written), then write the new state, the history entry and the data-plane
//! event together. An illegal command changes nothing.

use api::{CreateInstance, Instance};
use domain::state::Change;
use domain::{
    diff_specs, predict_restart, transition, validate_spec, DataPlaneEvent, Event, EventKind,
    InstanceName, InstanceSpec, State, ValidationErrors,
};
use sqlx::PgConnection;
use tracing::instrument;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::store::{self, HistoryRecord, InstanceRow, NewInstance};
use crate::AppState;

/// A command on an existing instance.
#[derive(Debug, Clone)]
pub enum Command {
    Update {
        spec: Box<InstanceSpec>,
        expected_generation: Option<i64>,
        /// Hand the instance to this client owner as well.
        owner: Option<String>,
    },
    Restart,
    Stop,
    Start,
    Delete,
    /// Re-send the desired spec unchanged, because the instance drifted
    /// (a source in `heal` mode). `restart` says whether the drifted fields
    /// need a restart to be put back.
    Heal {
        restart: Vec<String>,
    },
}

impl Command {
    fn event(&self) -> Event {
        match self {
            Command::Update { .. } | Command::Heal { .. } => Event::Update,
            Command::Restart => Event::Restart,
            Command::Stop => Event::Stop,
            Command::Start => Event::Start,
            Command::Delete => Event::Delete,
        }
    }
}

#[instrument(skip_all, fields(org = %caller.org, name = %req.name))]
pub async fn create(state: &AppState, caller: &Caller, req: CreateInstance) -> Result<Instance> {
    let mut errs = ValidationErrors::default();
    if let Err(e) = InstanceName::parse(&req.name) {
        errs.push("name", e.to_string());
    }
    if let Err(e) = validate_spec(&req.spec, "spec") {
        errs.0.extend(e.0);
    }
    let owner = match creating_owner(caller, req.owner.as_deref()) {
        Ok(owner) => owner,
        Err(message) => {
            errs.push("owner", message);
            String::new()
        }
    };
    errs.into_result().map_err(ApiError::Invalid)?;
    let spec = req.spec.clone().normalized();
    let data_plane = req
        .data_plane
        .unwrap_or_else(|| state.default_data_plane.clone());
    queue::data_plane_queue(&data_plane)?;

    let mut tx = state.pool.begin().await?;
    check_data_plane_known(&mut tx, &state.default_data_plane, &data_plane).await?;
    // Checked as sent, so that field paths index the request's list.
    check_extensions_available(&mut tx, &data_plane, &req.spec).await?;
    let existing: Option<(String, String)> = sqlx::query_as(
        "select state, owner from instances where org = $1 and name = $2 and state <> 'Deleted'",
    )
    .bind(&caller.org)
    .bind(&req.name)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((st, owner)) = existing {
        return Err(ApiError::Conflict(format!(
            "instance {:?} already exists (state {st}, managed by {owner})",
            req.name
        )));
    }
    check_quota(&mut tx, &caller.org, state.max_instances_per_org).await?;
    let restore_source = match &spec.restore {
        Some(restore) => {
            Some(resolve_restore(&mut tx, &caller.org, &data_plane, &spec, restore).await?)
        }
        None => None,
    };
    let row = store::insert_instance(
        &mut tx,
        NewInstance {
            restore_source: restore_source.as_ref(),
            id: Uuid::new_v4(),
            org: &caller.org,
            name: &req.name,
            data_plane: &data_plane,
            owner: &owner,
            state: domain::state::initial_state(),
            spec: &spec,
        },
    )
    .await?;
    store::record_history(
        &mut tx,
        HistoryRecord {
            instance_id: row.id,
            from: None,
            event: Event::Create.as_str(),
            to: row.state(),
            generation: row.generation,
            actor: &caller.actor(),
            detail: None,
        },
    )
    .await?;
    enqueue(state, &mut tx, &row, EventKind::Create, false).await?;
    tx.commit().await?;
    tracing::info!(instance_id = %row.id, "instance submitted");
    Ok(row.into_api())
}

#[instrument(skip_all, fields(org = %caller.org, name = %name, event = %command.event()))]
pub async fn execute(
    state: &AppState,
    caller: &Caller,
    name: &str,
    command: Command,
) -> Result<Instance> {
    let event = command.event();
    let mut tx = state.pool.begin().await?;
    let row = store::find_instance(&mut tx, &caller.org, name, true).await?;
    let current = row.state();
    let old_spec = row.spec.0.clone();
    check_owner(caller, &row, &command)?;
    if let Command::Update { spec, .. } = &command {
        if spec.restore.is_some() && spec.restore != old_spec.restore {
            return Err(ApiError::invalid(
                "spec.restore",
                "applies only when an instance is created; to restore again, create a new instance from the backups (or delete this one and create it again)",
            ));
        }
    }

    let new_spec = match &command {
        Command::Update {
            spec,
            expected_generation,
            ..
        } => {
            validate_spec(spec, "spec").map_err(ApiError::Invalid)?;
            if let Some(g) = expected_generation {
                if *g != row.generation {
                    return Err(ApiError::Conflict(format!(
                        "instance {name:?} is at generation {}, not {g}: it changed since you read it",
                        row.generation
                    )));
                }
            }
            let mut spec = (**spec).clone().normalized();
            // Stop/start are commands of their own; an update keeps the run state.
            spec.stopped = old_spec.stopped;
            // Where the data came from stays part of the spec.
            spec.restore = old_spec.restore.clone();
            spec
        }
        Command::Stop => InstanceSpec {
            stopped: true,
            ..old_spec.clone()
        },
        Command::Start => InstanceSpec {
            stopped: false,
            ..old_spec.clone()
        },
        Command::Restart | Command::Delete | Command::Heal { .. } => old_spec.clone(),
    };
    let prediction = match &command {
        Command::Update { .. } => predict_restart(&old_spec, &new_spec),
        Command::Heal { restart } => domain::RestartPrediction {
            reasons: restart.clone(),
        },
        _ => Default::default(),
    };
    let next = transition(
        current,
        event,
        Change {
            restart_required: prediction.required(),
        },
    )
    .map_err(|e| ApiError::deleted_or(current, name, e))?;

    let mut row = row;
    if let Command::Update {
        spec: sent, owner, ..
    } = &command
    {
        check_extensions_available(&mut tx, &row.data_plane, sent).await?;
        if let Some(owner) = owner.as_deref().filter(|o| *o != row.owner) {
            hand_over(&mut tx, caller, &mut row, owner).await?;
        }
        // An update that changes nothing is not an event: nothing is enqueued.
        if diff_specs(&old_spec, &new_spec).is_empty() && current != State::Error {
            tx.commit().await?;
            return Ok(row.into_api());
        }
    }

    let generation = row.generation + 1;
    let kind = match command {
        Command::Update { .. } | Command::Heal { .. } => EventKind::Update,
        Command::Restart => EventKind::Restart,
        Command::Stop => EventKind::Stop,
        Command::Start => EventKind::Start,
        Command::Delete => EventKind::Delete,
    };
    let updated = store::apply_command(
        &mut tx,
        row.id,
        next,
        &new_spec,
        generation,
        &prediction.reasons,
        kind,
    )
    .await?;
    let detail = match &command {
        Command::Heal { .. } => Some(match prediction.reasons.is_empty() {
            true => "heal: re-sent the desired spec after drift".to_owned(),
            false => format!(
                "heal: re-sent the desired spec after drift; restart: {}",
                prediction.reasons.join("; ")
            ),
        }),
        _ => describe_change(&old_spec, &new_spec, &prediction.reasons),
    };
    store::record_history(
        &mut tx,
        HistoryRecord {
            instance_id: row.id,
            from: Some(current),
            event: event.as_str(),
            to: next,
            generation,
            actor: &caller.actor(),
            detail: detail.as_deref(),
        },
    )
    .await?;
    enqueue(state, &mut tx, &updated, kind, prediction.required()).await?;
    tx.commit().await?;
    Ok(updated.into_api())
}

/// Heals one instance: when its data plane reports drift, re-sends its
/// declared spec (restarting when a drifted parameter needs it); an
/// instance in sync comes back unchanged.
pub async fn heal(state: &AppState, caller: &Caller, name: &str) -> Result<Instance> {
    let mut conn = state.pool.acquire().await?;
    let row = store::find_instance(&mut conn, &caller.org, name, false).await?;
    drop(conn);
    let command = Command::Heal { restart: vec![] };
    check_owner(caller, &row, &command)?;
    let drift = crate::drift::instance_drift(row.clone(), chrono::Utc::now());
    if drift.status != api::DriftStatus::Drifted {
        return Ok(row.into_api());
    }
    let (restart, _) = crate::drift::heal_plan(&drift);
    execute(
        state,
        caller,
        &row.id.to_string(),
        Command::Heal { restart },
    )
    .await
}

/// Who owns an instance `caller` creates: a GitOps source owns what it
/// creates; a client may choose only [`api::CLIENT_OWNERS`] (`api` by
/// default), never a source's `git:NAME`.
fn creating_owner(caller: &Caller, requested: Option<&str>) -> std::result::Result<String, String> {
    match (&caller.source, requested) {
        (Some(source), None) => Ok(source.owner.clone()),
        (Some(source), Some(o)) if o == source.owner => Ok(source.owner.clone()),
        (Some(source), Some(o)) => Err(format!(
            "a source creates instances as {}, not {o:?}",
            source.owner
        )),
        (None, None) => Ok(api::CLIENT_OWNERS[0].to_owned()),
        (None, Some(o)) if api::CLIENT_OWNERS.contains(&o) => Ok(o.to_owned()),
        (None, Some(o)) => Err(format!(
            "{o:?} is not an owner a client may set; one of {} (instances owned by a GitOps source, git:NAME, are created by that source)",
            api::CLIENT_OWNERS.join(", ")
        )),
    }
}

/// One owner per instance. What an instance declares (its spec, whether
/// it runs, its existence) changes only through its owner: a GitOps
/// source's instances through that source, a client's (`api`,
/// `terraform`) through that client, or through another client that
/// overrides explicitly. Restarts are operations and stay open.
fn check_owner(caller: &Caller, row: &InstanceRow, command: &Command) -> Result<()> {
    let acting = caller.acting_owner();
    if matches!(command, Command::Restart) || row.owner == acting {
        return Ok(());
    }
    let refuse = |message: String| ApiError::OwnedElsewhere {
        owner: row.owner.clone(),
        message,
    };
    if row.owner.starts_with("git:") || caller.source.is_some() {
        let how = match command {
            Command::Stop | Command::Start => {
                "declare `stopped: true` or `false` in its manifest there"
            }
            Command::Delete => "remove it from the manifests there (with prune on)",
            _ => "change its manifest there",
        };
        return Err(refuse(format!(
            "instance {:?} is managed by {}: {how} (or let another source adopt it); {acting} may not change it",
            row.name, row.owner
        )));
    }
    if caller.override_owner {
        return Ok(());
    }
    let how = match row.owner.as_str() {
        "terraform" => "change it in its Terraform configuration and run terraform apply",
        _ => "change it through the API or the CLI (terraform import takes it over)",
    };
    Err(refuse(format!(
        "instance {:?} is managed by {}: {how}, or override with --override-owner (header {}: true), knowing that its owner's next run may put it back",
        row.name,
        row.owner,
        api::OVERRIDE_OWNER_HEADER
    )))
}

/// Gives `row` to the client owner `owner`, inside `tx`, with a history
/// entry; [`check_owner`] has let the caller change it.
async fn hand_over(
    tx: &mut PgConnection,
    caller: &Caller,
    row: &mut InstanceRow,
    owner: &str,
) -> Result<()> {
    if !api::CLIENT_OWNERS.contains(&owner) {
        return Err(ApiError::invalid(
            "owner",
            format!(
                "{owner:?} is not an owner a client may set; one of {}",
                api::CLIENT_OWNERS.join(", ")
            ),
        ));
    }
    change_owner(tx, caller, row, owner, "").await
}

/// Makes `owner` the owner of `row`, inside `tx`, with an `Owner` history
/// entry (`owner: OLD → NEW`, then `note`).
async fn change_owner(
    tx: &mut PgConnection,
    caller: &Caller,
    row: &mut InstanceRow,
    owner: &str,
    note: &str,
) -> Result<()> {
    sqlx::query("update instances set owner = $2 where id = $1")
        .bind(row.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    let detail = format!("owner: {} → {owner}{note}", row.owner);
    store::record_history(
        tx,
        HistoryRecord {
            instance_id: row.id,
            from: Some(row.state()),
            event: "Owner",
            to: row.state(),
            generation: row.generation,
            actor: &caller.actor(),
            detail: Some(&detail),
        },
    )
    .await?;
    row.owner = owner.to_owned();
    Ok(())
}

/// Makes the source owner `owner` (`git:NAME`) the owner of the live
/// instance `name`, with an `Owner` history entry; the source's sync has
/// decided to adopt it. A no-op when it already is.
pub async fn adopt(state: &AppState, caller: &Caller, name: &str, owner: &str) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    let mut row = store::find_instance(&mut tx, &caller.org, name, true).await?;
    if row.state() == State::Deleted || row.owner == owner {
        return Ok(());
    }
    change_owner(&mut tx, caller, &mut row, owner, " (adopted)").await?;
    tx.commit().await?;
    Ok(())
}

/// Sends the instance's full desired spec to its data plane, inside `tx`.
pub async fn enqueue(
    state: &AppState,
    tx: &mut PgConnection,
    row: &InstanceRow,
    kind: EventKind,
    restart_predicted: bool,
) -> Result<()> {
    let event = data_plane_event(row, kind, restart_predicted);
    state.queues.send_event(tx, &row.data_plane, &event).await?;
    Ok(())
}

/// The event carrying the instance's full desired spec.
fn data_plane_event(row: &InstanceRow, kind: EventKind, restart_predicted: bool) -> DataPlaneEvent {
    DataPlaneEvent {
        event_id: Uuid::new_v4(),
        instance_id: row.id,
        org: row.org.clone(),
        name: row.name.clone(),
        generation: row.generation,
        kind,
        spec: row.spec.0.clone(),
        restart_predicted,
        restore_from: match kind {
            EventKind::Create => row.restore_source.as_ref().map(|r| r.0.clone()),
            _ => None,
        },
        switchover_to: None,
    }
}

fn describe_change(old: &InstanceSpec, new: &InstanceSpec, reasons: &[String]) -> Option<String> {
    let changes: Vec<String> = diff_specs(old, new)
        .into_iter()
        .map(|c| {
            format!(
                "{}: {} → {}",
                c.path,
                c.from.as_deref().unwrap_or("unset"),
                c.to.as_deref().unwrap_or("unset")
            )
        })
        .collect();
    let mut parts = Vec::new();
    if !changes.is_empty() {
        parts.push(changes.join(", "));
    }
    if !reasons.is_empty() {
        parts.push(format!("restart: {}", reasons.join("; ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The instance a new one restores, checked before anything is created:
/// in the caller's organisation (another's is "not found"), live or
/// deleted, on the same data plane, with a backup that reaches the target,
/// and with no extension the new spec would drop.
async fn resolve_restore(
    conn: &mut PgConnection,
    org: &str,
    data_plane: &str,
    spec: &InstanceSpec,
    restore: &domain::RestoreSpec,
) -> Result<domain::RestoreSource> {
    let target = restore
        .target()
        .map_err(|(field, m)| ApiError::invalid(&format!("spec.restore.{field}"), m))?;
    let source = match store::find_instance(conn, org, &restore.from, false).await {
        Ok(row) => row,
        Err(ApiError::NotFound(_)) => {
            return Err(ApiError::invalid(
                "spec.restore.from",
                format!("no instance {:?} in this organisation", restore.from),
            ))
        }
        Err(e) => return Err(e),
    };
    if source.data_plane != data_plane {
        return Err(ApiError::invalid(
            "spec.restore.from",
            format!(
                "{:?} is on data plane {:?}; a restore is made on the data plane that holds the backups",
                restore.from, source.data_plane
            ),
        ));
    }
    let live = source.state() != State::Deleted;
    let catalog = source.backups.map(|b| b.0).unwrap_or_default();
    catalog
        .check_target(&target, live, chrono::Utc::now())
        .map_err(|m| {
            let field = match target {
                domain::RestoreTarget::Lsn(_) => "spec.restore.lsn",
                domain::RestoreTarget::Time(_) => "spec.restore.at",
                domain::RestoreTarget::Latest => "spec.restore.from",
            };
            ApiError::invalid(
                field,
                format!("cannot restore {:?} there: {m}", restore.from),
            )
        })?;
    let missing: Vec<&str> = source
        .spec
        .0
        .extension_names()
        .filter(|e| !spec.has_extension(e))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::invalid(
            "spec.extensions",
            format!(
                "{:?} has extensions {} that this spec does not list; a restored instance keeps its source's extensions, so list them",
                restore.from,
                missing.join(", ")
            ),
        ));
    }
    Ok(domain::RestoreSource {
        instance_id: source.id,
        target,
        live,
    })
}

/// Refuses a request (`event`, e.g. `Backup`) unless the instance is in
/// one of the `allowed` states, and records it in the history without
/// moving its state.
async fn record_request(
    tx: &mut sqlx::PgConnection,
    caller: &Caller,
    row: &InstanceRow,
    allowed: &[State],
    event: &'static str,
    detail: &str,
) -> Result<()> {
    let current = row.state();
    if current == State::Deleted {
        return Err(ApiError::Deleted {
            name: row.name.clone(),
        });
    }
    if !allowed.contains(&current) {
        let needs = allowed
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        return Err(ApiError::Conflict(format!(
            "instance {:?} is {current}; {} needs it {needs}",
            row.name,
            event.to_lowercase()
        )));
    }
    store::record_history(
        tx,
        HistoryRecord {
            instance_id: row.id,
            from: Some(current),
            event,
            to: current,
            generation: row.generation,
            actor: &caller.actor(),
            detail: Some(detail),
        },
    )
    .await
}

/// Asks the data plane for a full backup now. Moves no state; the history
/// records the request, and later the backup's outcome.
pub async fn request_backup(state: &AppState, caller: &Caller, name: &str) -> Result<Instance> {
    let mut tx = state.pool.begin().await?;
    let row = store::find_instance(&mut tx, &caller.org, name, true).await?;
    let allowed = [State::Up, State::Configuring, State::Restarting];
    record_request(
        &mut tx,
        caller,
        &row,
        &allowed,
        "Backup",
        "full backup requested",
    )
    .await?;
    enqueue(state, &mut tx, &row, EventKind::Backup, false).await?;
    tx.commit().await?;
    Ok(row.into_api())
}

/// Asks the data plane to make a standby the primary: `to` (`member-N`)
/// or, without it, the most advanced standby. Moves no state; the history
/// records the request, and later how it went.
pub async fn request_switchover(
    state: &AppState,
    caller: &Caller,
    name: &str,
    to: Option<&str>,
) -> Result<Instance> {
    let mut tx = state.pool.begin().await?;
    let row = store::find_instance(&mut tx, &caller.org, name, true).await?;
    if row.spec.0.replicas < 2 {
        return Err(ApiError::Conflict(format!(
            "instance {name:?} has one server (replicas: {}); a switchover needs a standby (replicas 2 or more)",
            row.spec.0.replicas
        )));
    }
    let target = match to {
        None => None,
        Some(member) => Some(switchover_target(&row, member)?),
    };
    let detail = match to {
        Some(member) => format!("switchover to {member} requested"),
        None => "switchover to the most advanced standby requested".to_owned(),
    };
    record_request(&mut tx, caller, &row, &[State::Up], "Switchover", &detail).await?;
    let event = DataPlaneEvent {
        switchover_to: target,
        ..data_plane_event(&row, EventKind::Switchover, false)
    };
    state
        .queues
        .send_event(&mut tx, &row.data_plane, &event)
        .await?;
    tx.commit().await?;
    Ok(row.into_api())
}

/// The member index `member` (`member-N`) names, when it is one of the
/// instance's standbys as last observed.
fn switchover_target(row: &InstanceRow, member: &str) -> Result<u32> {
    let members = row
        .observed
        .as_ref()
        .and_then(|o| o.0.members.clone())
        .unwrap_or_default();
    let standbys: Vec<&str> = members
        .iter()
        .filter(|m| m.role == domain::MemberRole::Standby)
        .map(|m| m.name.as_str())
        .collect();
    let index = member
        .strip_prefix("member-")
        .and_then(|n| n.parse::<u32>().ok());
    match index {
        Some(i) if standbys.contains(&member) => Ok(i),
        _ if members.iter().any(|m| m.name == member) => Err(ApiError::invalid(
            "to",
            format!(
                "{member:?} is already the primary; name a standby ({})",
                standbys.join(", ")
            ),
        )),
        _ => Err(ApiError::invalid(
            "to",
            format!(
                "{member:?} is not a standby of {:?}; its standbys are: {}",
                row.name,
                if standbys.is_empty() {
                    "none observed yet".to_owned()
                } else {
                    standbys.join(", ")
                }
            ),
        )),
    }
}

/// Refuses a data plane that has no queue: one no conductor has registered,
/// other than the default (whose queue the control plane creates itself).
async fn check_data_plane_known(
    conn: &mut PgConnection,
    default_data_plane: &str,
    data_plane: &str,
) -> Result<()> {
    if data_plane == default_data_plane {
        return Ok(());
    }
    let mut known: Vec<String> = sqlx::query_scalar("select name from data_planes")
        .fetch_all(&mut *conn)
        .await?;
    if known.iter().any(|k| k == data_plane) {
        return Ok(());
    }
    known.push(default_data_plane.to_owned());
    known.sort();
    known.dedup();
    Err(ApiError::invalid(
        "dataPlane",
        format!(
            "unknown data plane {data_plane:?}; known: {}",
            known.join(", ")
        ),
    ))
}

/// Refuses a new instance when the organisation already has `limit` live
/// ones (0: no limit). The organisation's row is locked first, so creates
/// racing in one organisation are counted one after the other.
async fn check_quota(conn: &mut PgConnection, org: &str, limit: u32) -> Result<()> {
    if limit == 0 {
        return Ok(());
    }
    sqlx::query("select 1 from orgs where name = $1 for update")
        .bind(org)
        .execute(&mut *conn)
        .await?;
    let live: i64 =
        sqlx::query_scalar("select count(*) from instances where org = $1 and state <> 'Deleted'")
            .bind(org)
            .fetch_one(&mut *conn)
            .await?;
    if live >= i64::from(limit) {
        return Err(ApiError::QuotaExceeded {
            org: org.to_owned(),
            limit,
        });
    }
    Ok(())
}

/// Rejects extensions (and versions) the data plane said it cannot run,
/// listing what it can.
async fn check_extensions_available(
    conn: &mut PgConnection,
    data_plane: &str,
    spec: &InstanceSpec,
) -> Result<()> {
    let Some(catalog) = store::data_plane_extensions(conn, data_plane).await? else {
        return Ok(());
    };
    let mut errs = domain::extension::check_against_catalog(spec, &catalog, data_plane, "spec")
        .err()
        .unwrap_or_default();
    let available: Vec<&str> = catalog.iter().map(|e| e.name.as_str()).collect();
    // A preload library of an extension the data plane lacks has no file
    // there either: the server would not start.
    let preload = spec
        .config
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("shared_preload_libraries"));
    if let Some((key, value)) = preload {
        for lib in value.split(',').map(|l| l.trim().trim_matches('"')) {
            let extension = domain::extension::REVIEWED
                .iter()
                .find(|r| r.library == lib)
                .map(|r| r.extension);
            if let Some(ext) = extension.filter(|e| !available.contains(e)) {
                errs.push(
                    format!("spec.config.{key}"),
                    format!(
                        "library {lib:?} comes with extension {ext:?}, which is not available on data plane {data_plane:?}; available: {}",
                        available.join(", ")
                    ),
                );
            }
        }
    }
    errs.into_result().map_err(ApiError::Invalid)
}
