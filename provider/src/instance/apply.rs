//! Create, update, delete, read and import `pgplane_instance` through the
//! control plane's API, waiting for the data plane to act.

use std::time::Duration;

use api::wait::{Goal, Observer, Options, Poll, WaitError};
use api::{Client, ClientError, CreateInstance, Credentials, Instance, UpdateInstance};
use domain::State;
use tokio_util::sync::CancellationToken;

use super::model::{self, applied, refreshed, spec_from, timeout, without_unknowns, Operation};
use crate::diag::{self, Diagnostics};
use crate::value::Value;

/// Who owns instances the provider creates.
pub const OWNER: &str = "terraform";
/// The pauses between fetches of the instance while waiting: from 50 ms,
/// doubling up to a second.
const POLL: Poll = Poll::backoff(Duration::from_millis(50), Duration::from_secs(1));

/// What an operation needs: the API client and the token `StopProvider` cancels.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub stop: CancellationToken,
}

/// `ApplyResourceChange`: the new state (null when gone) and diagnostics.
/// On failure after the instance exists, its id is still in the new state.
pub async fn apply(ctx: &Ctx, prior: &Value, planned: Value) -> (Value, Diagnostics) {
    if planned.is_null() {
        delete(ctx, prior).await
    } else if prior.is_null() {
        create(ctx, planned).await
    } else {
        update(ctx, prior, planned).await
    }
}

#[tracing::instrument(skip_all, fields(name = planned.get("name").as_str().unwrap_or_default()))]
async fn create(ctx: &Ctx, planned: Value) -> (Value, Diagnostics) {
    let Some(spec) = spec_from(&planned, None) else {
        return (
            Value::Null,
            vec![diag::error("Unknown values at apply", "")],
        );
    };
    let name = planned.get("name").as_str().unwrap_or_default().to_owned();
    let req = CreateInstance {
        name: name.clone(),
        spec,
        data_plane: None,
        owner: Some(OWNER.to_owned()),
    };
    let inst = match ctx.client.create_instance(&req).await {
        Ok(i) => i,
        Err(ClientError::Api {
            status: 409,
            message,
            ..
        }) => {
            return (
                Value::Null,
                vec![diag::error_at(
                    diag::attr_path("name"),
                    format!("Instance {name:?} already exists"),
                    format!(
                        "{message}\n\nTo manage it with Terraform, import it: \
                         terraform import <resource address> ORG/{name}"
                    ),
                )],
            )
        }
        Err(e) => {
            return (
                Value::Null,
                api_error(&format!("Creating instance {name:?}"), e),
            )
        }
    };
    tracing::info!(instance_id = %inst.id, generation = inst.generation, "created; waiting until Up");
    let limit = timeout(&planned, Operation::Create);
    let waited = match wait(ctx, &inst, Goal::Settled, limit).await {
        Ok(inst) => run_state(ctx, inst, model::stopped(&planned), limit).await,
        Err(e) => Err(e),
    };
    finish(ctx, &planned, waited, "create").await
}

#[tracing::instrument(skip_all, fields(instance_id = prior.get("id").as_str().unwrap_or_default()))]
async fn update(ctx: &Ctx, prior: &Value, planned: Value) -> (Value, Diagnostics) {
    let id = prior.get("id").as_str().unwrap_or_default().to_owned();
    let current = match ctx.client.get_instance(&id).await {
        Ok(i) if i.state != State::Deleted => i,
        Ok(_) | Err(ClientError::Api { status: 404, .. }) => {
            return (prior.clone(), vec![gone_error(prior)]);
        }
        Err(e) => return (prior.clone(), api_error("Reading the instance", e)),
    };
    let Some(spec) = spec_from(&planned, Some(&current.spec)) else {
        return (
            prior.clone(),
            vec![diag::error("Unknown values at apply", "")],
        );
    };
    let limit = timeout(&planned, Operation::Update);
    let stopped = model::stopped(&planned);
    // A change to a stopped instance that is to run is made once it runs.
    if !stopped && model::is_stopped(&current) {
        if let Err(e) = run_state(ctx, current, false, limit).await {
            return finish(ctx, &planned, Err(e), "update").await;
        }
    }
    let req = UpdateInstance {
        spec,
        expected_generation: None,
        owner: None,
    };
    let inst = match ctx.client.update_instance(&id, &req).await {
        Ok(i) => i,
        Err(ClientError::Api { status: 404, .. }) => {
            return (prior.clone(), vec![gone_error(prior)])
        }
        Err(ClientError::Api {
            code: api::ErrorCode::Deleted,
            ..
        }) => return (prior.clone(), vec![gone_error(prior)]),
        Err(e) => return (prior.clone(), api_error("Updating the instance", e)),
    };
    if !inst.restart_reasons.is_empty() {
        tracing::info!(reasons = ?inst.restart_reasons, "the update restarts Postgres");
    }
    let waited = match wait(ctx, &inst, Goal::Settled, limit).await {
        Ok(inst) => run_state(ctx, inst, stopped, limit).await,
        Err(e) => Err(e),
    };
    finish(ctx, &planned, waited, "update").await
}

/// Stops or starts `inst` unless it already is as `stopped` says, and
/// waits until the data plane has done it.
async fn run_state(
    ctx: &Ctx,
    inst: Instance,
    stopped: bool,
    limit: Duration,
) -> Result<Instance, WaitError> {
    if model::is_stopped(&inst) == stopped {
        return Ok(inst);
    }
    let action = if stopped { "stop" } else { "start" };
    tracing::info!(instance_id = %inst.id, action, "changing the run state");
    match ctx
        .client
        .instance_action(&inst.id.to_string(), action)
        .await
    {
        Ok(next) => wait(ctx, &next, Goal::Settled, limit).await,
        Err(error) => Err(WaitError::Api {
            inst: Box::new(inst),
            error,
        }),
    }
}

/// The new state after a create or update wait, with the failure (if any)
/// as a diagnostic: the id is saved either way.
async fn finish(
    ctx: &Ctx,
    planned: &Value,
    waited: Result<Instance, WaitError>,
    what: &str,
) -> (Value, Diagnostics) {
    let name = planned.get("name").as_str().unwrap_or_default();
    match waited {
        Ok(inst) => {
            let mut diags = Vec::new();
            let creds = match credentials(ctx, &inst).await {
                Ok(c) => c,
                Err(e) => {
                    diags.extend(api_error("Reading the connection URI", e));
                    None
                }
            };
            (applied(planned, &inst, creds.as_ref()), diags)
        }
        Err(WaitError::Failed { inst, reason }) => (
            applied(planned, &inst, None),
            vec![diag::error(
                format!("Instance {name:?} failed to {what}"),
                format!("The control plane reports the instance in state Error: {reason}"),
            )],
        ),
        Err(WaitError::Gone { inst }) => (
            without_unknowns(applied(planned, &inst, None)),
            vec![diag::error(
                format!("Instance {name:?} was deleted while waiting for it to {what}"),
                "It was deleted outside Terraform; apply again to re-create it.",
            )],
        ),
        Err(WaitError::Timeout { inst, after, .. }) => (
            applied(planned, &inst, None),
            vec![diag::error(
                format!("Timed out waiting for instance {name:?} to {what}"),
                format!(
                    "After {after:?} it is {} (generation {}, observed {}). \
                     Raise `timeouts {{ {what} = … }}` or look at `pgplane instance history {name}`.",
                    inst.state, inst.generation, inst.observed_generation
                ),
            )],
        ),
        Err(WaitError::Cancelled { inst }) => (
            applied(planned, &inst, None),
            vec![diag::error(
                format!("Interrupted while waiting for instance {name:?} to {what}"),
                format!("It is {}; the control plane carries on.", inst.state),
            )],
        ),
        Err(WaitError::Api { inst, error }) => (
            applied(planned, &inst, None),
            api_error(&format!("Waiting for instance {name:?}"), error),
        ),
    }
}

#[tracing::instrument(skip_all, fields(instance_id = prior.get("id").as_str().unwrap_or_default()))]
async fn delete(ctx: &Ctx, prior: &Value) -> (Value, Diagnostics) {
    let id = prior.get("id").as_str().unwrap_or_default().to_owned();
    if id.is_empty() {
        return (Value::Null, vec![]);
    }
    let inst = match ctx.client.delete_instance(&id).await {
        Ok(i) => i,
        Err(ClientError::Api { status: 404, .. }) => return (Value::Null, vec![]),
        Err(ClientError::Api {
            code: api::ErrorCode::Deleted,
            ..
        }) => return (Value::Null, vec![]),
        Err(e) => return (prior.clone(), api_error("Deleting the instance", e)),
    };
    match wait(ctx, &inst, Goal::Deleted, timeout(prior, Operation::Delete)).await {
        Ok(_) | Err(WaitError::Gone { .. }) => (Value::Null, vec![]),
        Err(WaitError::Failed { reason, .. }) => (
            prior.clone(),
            vec![diag::error("Deleting the instance failed", reason)],
        ),
        Err(WaitError::Timeout { inst, after, .. }) => (
            prior.clone(),
            vec![diag::error(
                "Timed out waiting for the instance to be deleted",
                format!("After {after:?} it is {}.", inst.state),
            )],
        ),
        Err(WaitError::Cancelled { .. }) => (
            prior.clone(),
            vec![diag::error("Interrupted while deleting the instance", "")],
        ),
        Err(WaitError::Api { error, .. }) => {
            (prior.clone(), api_error("Deleting the instance", error))
        }
    }
}

/// `ReadResource`: the instance as it is now; null when it is gone (404 or
/// `Deleted`), so the next plan re-creates it instead of failing.
pub async fn read(ctx: &Ctx, prior: &Value) -> (Value, Diagnostics) {
    let Some(id) = prior.get("id").as_str() else {
        return (prior.clone(), vec![]);
    };
    let inst = match ctx.client.get_instance(id).await {
        Ok(i) if i.state == State::Deleted => return (Value::Null, vec![]),
        Ok(i) => i,
        Err(ClientError::Api { status: 404, .. }) => return (Value::Null, vec![]),
        Err(e) => return (prior.clone(), api_error("Reading the instance", e)),
    };
    let creds = if model::needs_credentials(prior, &inst) {
        match credentials(ctx, &inst).await {
            Ok(c) => c,
            Err(e) => return (prior.clone(), api_error("Reading the connection URI", e)),
        }
    } else {
        None
    };
    (refreshed(prior, &inst, creds.as_ref()), vec![])
}

/// `ImportResourceState`: by `ORG/NAME` (ORG must be the token's
/// organisation) or by id. Importing takes the instance over: its owner
/// becomes `terraform` (an instance a GitOps source owns is refused).
pub async fn import(ctx: &Ctx, id: &str) -> (Value, Diagnostics) {
    let (org, key) = match id.split_once('/') {
        Some((org, name)) => (Some(org), name),
        None => (None, id),
    };
    if key.is_empty() || org.is_some_and(str::is_empty) {
        return (
            Value::Null,
            vec![diag::error(
                "Invalid import id",
                format!("{id:?}: use ORG/NAME (e.g. default/orders) or the instance's id"),
            )],
        );
    }
    let inst = match ctx.client.get_instance(key).await {
        Ok(i) => i,
        Err(ClientError::Api { status: 404, .. }) => {
            return (
                Value::Null,
                vec![diag::error(
                    "Cannot import a non-existent instance",
                    format!("No instance {key:?} in the provider token's organisation."),
                )],
            )
        }
        Err(e) => return (Value::Null, api_error("Reading the instance", e)),
    };
    if let Some(org) = org {
        if org != inst.org {
            return (
                Value::Null,
                vec![diag::error(
                    "Wrong organisation",
                    format!(
                        "{org:?} is not the organisation of the provider's token ({:?}); \
                         the provider manages only that organisation's instances.",
                        inst.org
                    ),
                )],
            );
        }
    }
    if inst.state == State::Deleted {
        return (
            Value::Null,
            vec![diag::error(
                "Cannot import a deleted instance",
                inst.name.clone(),
            )],
        );
    }
    let inst = match take_over(ctx, inst).await {
        Ok(i) => i,
        Err(e) => return (Value::Null, api_error("Taking the instance over", e)),
    };
    match credentials(ctx, &inst).await {
        Ok(creds) => (refreshed(&Value::Null, &inst, creds.as_ref()), vec![]),
        Err(e) => (Value::Null, api_error("Reading the connection URI", e)),
    }
}

/// Makes `terraform` the owner of `inst` (a no-op when it is already).
async fn take_over(ctx: &Ctx, inst: Instance) -> Result<Instance, ClientError> {
    if inst.owner == OWNER {
        return Ok(inst);
    }
    let req = UpdateInstance {
        spec: inst.spec.clone(),
        expected_generation: Some(inst.generation),
        owner: Some(OWNER.to_owned()),
    };
    let taken = ctx
        .client
        .clone()
        .overriding_owner(true)
        .update_instance(&inst.id.to_string(), &req)
        .await?;
    tracing::info!(instance_id = %taken.id, from = %inst.owner, "imported: owner is now terraform");
    Ok(taken)
}

/// The connection URI (with password), when the instance has a connection.
async fn credentials(ctx: &Ctx, inst: &Instance) -> Result<Option<Credentials>, ClientError> {
    if inst.connection.is_none() {
        return Ok(None);
    }
    ctx.client.credentials(&inst.id.to_string()).await.map(Some)
}

fn gone_error(prior: &Value) -> crate::tfplugin::tfplugin6::Diagnostic {
    diag::error(
        format!(
            "Instance {:?} no longer exists",
            prior.get("name").as_str().unwrap_or_default()
        ),
        "It was deleted outside Terraform. Run `terraform apply` again: the refresh will plan to re-create it.",
    )
}

/// An API error as diagnostics: a 422's fields each at their attribute path.
pub fn api_error(what: &str, e: ClientError) -> Diagnostics {
    match e {
        ClientError::Api {
            fields, message, ..
        } if !fields.is_empty() => fields
            .into_iter()
            .map(|f| {
                diag::error_at(
                    diag::spec_field_path(&f.path),
                    format!("{what}: invalid {}", f.path),
                    f.message,
                )
            })
            .chain(std::iter::once(diag::error(what.to_owned(), message)))
            .collect(),
        e => vec![diag::error(format!("{what} failed"), e.to_string())],
    }
}

/// Waits until `start` reaches `goal`, a failure, `limit`, or StopProvider,
/// polling the instance and logging what it sees.
async fn wait(
    ctx: &Ctx,
    start: &Instance,
    goal: Goal,
    limit: Duration,
) -> Result<Instance, WaitError> {
    let options = Options {
        goal,
        timeout: limit,
        follow_events: false,
        poll: POLL,
    };
    api::wait::until(
        &ctx.client,
        start.clone(),
        options,
        &mut Log,
        ctx.stop.cancelled(),
    )
    .await
}

/// Logs what a wait sees.
struct Log;

impl Observer for Log {
    fn changed(&mut self, from: State, to: &Instance, _elapsed: Duration) {
        tracing::debug!(%from, to = %to.state, "state changed");
    }

    fn waiting(&mut self, inst: &Instance, generation: i64, _goal: Goal, elapsed: Duration) {
        tracing::info!(
            state = %inst.state,
            generation,
            observed_generation = inst.observed_generation,
            elapsed = ?elapsed,
            "still waiting for the data plane"
        );
    }

    fn retrying(&mut self, error: &ClientError) {
        // The control plane may be restarting: keep waiting until the deadline.
        tracing::warn!(%error, "control plane unavailable while waiting; retrying");
    }
}
