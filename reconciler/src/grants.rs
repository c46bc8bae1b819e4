//! What a data plane may do in the control plane's database, granted to a
//! database role of its own: use its queue, report on the status queue,
//! store the secrets and logs it seals, register itself. Nothing else:
//! it cannot read a token, a stored secret, another queue or an instance
//! row, and cannot change the schema.

use sqlx::PgPool;

use crate::StartError;

/// Why `role` is not a role name pgplane grants to.
fn check_role(role: &str) -> Result<(), String> {
    if domain::inside::is_identifier(role) {
        Ok(())
    } else {
        Err(format!(
            "role {role:?}: expected a lower-case SQL identifier (letters, digits, _; at most {})",
            domain::inside::MAX_IDENTIFIER_LEN
        ))
    }
}

/// The statements that give `role` exactly what the data plane whose queue
/// is `queue` needs.
fn statements(queue: &str, role: &str) -> Vec<String> {
    let r = format!("\"{role}\"");
    let q = format!("pgmq.\"q_{queue}\"");
    let a = format!("pgmq.\"a_{queue}\"");
    vec![
        format!("grant usage on schema pgmq to {r}"),
        // Read (which updates the visibility), acknowledge, dead-letter.
        format!("grant select, update, delete on {q} to {r}"),
        format!("grant select, insert on {a} to {r}"),
        // Reports (`pgmq.send` returns the new message's id, an identity:
        // no sequence to grant).
        format!(
            "grant insert, select (msg_id) on pgmq.\"q_{}\" to {r}",
            queue::STATUS_QUEUE
        ),
        format!("grant insert on dead_letters to {r}"),
        format!("grant usage on sequence dead_letters_id_seq to {r}"),
        // What the database is ready for (`database_unprepared`).
        format!("grant select on _sqlx_migrations to {r}"),
        // Sealing to the published key; never opening.
        format!("grant select on sealing_keys to {r}"),
        format!(
            "grant select (instance_id), insert, update (password, updated_at) on instance_secrets to {r}"
        ),
        format!(
            "grant select (instance_id, role), insert, update (password, updated_at), delete on role_secrets to {r}"
        ),
        format!("grant select (id, instance_id), insert, delete on instance_logs to {r}"),
        format!("grant usage on sequence instance_logs_id_seq to {r}"),
        // Registration with its extension catalog.
        format!(
            "grant select (name), insert, update (extensions, catalog, last_seen) on data_planes to {r}"
        ),
    ]
}

/// Creates the data plane's queue and grants `role` (an existing database
/// role) what a conductor of `data_plane` needs, in one transaction. Run
/// with the control plane's database owner; idempotent.
pub async fn grant_data_plane(
    pool: &PgPool,
    data_plane: &str,
    role: &str,
) -> Result<(), StartError> {
    check_role(role).map_err(StartError::Grant)?;
    let queues = queue::Queues::new(pool.clone()).await;
    let queue = queues
        .create_data_plane_queue(data_plane)
        .await
        .map_err(StartError::Queue)?;
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_roles where rolname = $1)")
            .bind(role)
            .fetch_one(pool)
            .await
            .map_err(StartError::Granting)?;
    if !exists {
        return Err(StartError::Grant(format!(
            "role {role:?} does not exist: create it first (CREATE ROLE {role} LOGIN PASSWORD '…')"
        )));
    }
    let mut tx = pool.begin().await.map_err(StartError::Granting)?;
    for statement in statements(&queue, role) {
        sqlx::query(&statement)
            .execute(&mut *tx)
            .await
            .map_err(StartError::Granting)?;
    }
    tx.commit().await.map_err(StartError::Granting)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_granted_to() {
        assert!(check_role("dp_eu_west").is_ok());
        for bad in [
            "",
            "Dp",
            "1dp",
            "dp-x",
            "dp\"; drop table tokens; --",
            &"a".repeat(64),
        ] {
            assert!(check_role(bad).is_err(), "{bad:?}");
        }
    }
}
