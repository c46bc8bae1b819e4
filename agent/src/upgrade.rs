//! Data directories made before pgplane had a role of its own: their
//! `postgres` role was the superuser, and the unix socket trusted it. The
//! first start after an upgrade creates pgplane's role over that old path,
//! then closes it (the current `pg_hba.conf` and `pg_ident.conf`, reloaded).
//! The client role stays a superuser until the next converge applies the
//! spec's `superuserAccess`.

use tokio_postgres::Client;

use crate::create::is_loopback;
use crate::error::{Error, Result};
use crate::template::{ADMIN_ROLE, PG_HBA};
use crate::Agent;

/// The role the agent administered such directories as.
pub(crate) const LEGACY_ADMIN_ROLE: &str = "postgres";

/// The line by which such a directory is recognised.
const LEGACY_HBA_LINE: &str = "local   all   postgres                  trust";

impl Agent {
    pub(crate) fn is_legacy(&self) -> bool {
        std::fs::read_to_string(self.layout.data_dir.join("pg_hba.conf"))
            .is_ok_and(|hba| hba.lines().any(|l| l.trim() == LEGACY_HBA_LINE))
    }

    /// Over `client` (the legacy trusted path): pgplane's role, then the
    /// current authentication files, reloaded.
    pub(crate) async fn upgrade_legacy(&self, client: &Client) -> Result<()> {
        tracing::warn!(data_dir = %self.layout.data_dir.display(), "upgrading a data directory made by an older pgplane");
        client
            .batch_execute(&format!(
                "DO $$ BEGIN \
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ADMIN_ROLE}') THEN \
                     CREATE ROLE {ADMIN_ROLE} SUPERUSER LOGIN; \
                   END IF; \
                 END $$"
            ))
            .await
            .map_err(|e| self.sql_error("creating pgplane's role", e))?;
        let dir = &self.layout.data_dir;
        self.write_pgplane_conf(dir)?;
        let hba = dir.join("pg_hba.conf");
        std::fs::write(&hba, PG_HBA).map_err(Error::io("writing", &hba))?;
        self.run_as.chown(&hba)?;
        if !is_loopback(&self.config.listen_address) {
            self.allow_remote_clients(dir)?;
        }
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(|e| self.sql_error("reloading the authentication files", e))
    }
}
