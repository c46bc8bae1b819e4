//! The agent's SQL connection (unix socket, as `pgplane`) and the quoting
//! rules for the few statements that cannot take bind parameters.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};
use crate::Agent;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Agent {
    /// One connection attempt over the unix socket. It sets no session
    /// parameters (not even `application_name`), so `current_setting` in it
    /// shows the server's values.
    pub(crate) async fn try_connect(&self) -> Result<Client, tokio_postgres::Error> {
        self.try_connect_as(crate::template::ADMIN_ROLE).await
    }

    /// [`Agent::try_connect`] as `user`.
    pub(crate) async fn try_connect_as(&self, user: &str) -> Result<Client, tokio_postgres::Error> {
        self.try_connect_to(user, "postgres").await
    }

    /// [`Agent::try_connect`] as `user`, to `database`.
    pub(crate) async fn try_connect_to(
        &self,
        user: &str,
        database: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.layout.socket_dir)
            .port(self.config.port)
            .user(user)
            .dbname(database)
            // The agent's own commits never wait for a synchronous standby
            // (it creates the first standby after them).
            .options("-c synchronous_commit=local")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect(NoTls)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "agent connection closed");
            }
        });
        Ok(client)
    }

    pub(crate) fn sql_error(&self, op: &'static str, source: tokio_postgres::Error) -> Error {
        Error::Sql {
            op,
            data_dir: self.layout.data_dir.clone(),
            source,
        }
    }
}

/// `"name"` with embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'` with embedded quotes doubled. Postgres 15 always has
/// `standard_conforming_strings = on`, so backslashes are literal.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A parameter name as `ALTER SYSTEM` takes it unquoted: identifiers, with
/// one `.` for extension parameters (`pg_stat_statements.max`).
pub(crate) fn check_parameter_name(name: &str) -> Result<()> {
    let part_ok = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if name.len() < 64 && parts.len() <= 2 && parts.iter().all(|p| part_ok(p)) {
        Ok(())
    } else {
        Err(Error::InvalidParameterName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal(r"it's \n"), r"'it''s \n'");
    }

    #[test]
    fn parameter_names() {
        assert!(check_parameter_name("work_mem").is_ok());
        assert!(check_parameter_name("pg_stat_statements.max").is_ok());
        for bad in ["", "a b", "x;drop", "a.b.c", "1abc", "work_mem'"] {
            assert!(check_parameter_name(bad).is_err(), "{bad}");
        }
    }
}
