//! Declared roles and databases: created, altered to their declared
//! attributes and memberships, dropped only when declared absent, and
//! observed back. Roles and databases the spec does not name are never
//! touched.

use std::collections::{BTreeMap, BTreeSet};

use domain::{Database, Ensure, InstanceSpec, ObservedDatabase, ObservedRole, Role};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::sql::quote_ident;
use crate::template::ADMIN_ROLE;
use crate::{Agent, Secret};

/// The passwords of declared roles, by role name.
#[derive(Debug, Clone, Default)]
pub struct RolePasswords(BTreeMap<String, Secret>);

impl RolePasswords {
    pub fn new(passwords: BTreeMap<String, Secret>) -> RolePasswords {
        RolePasswords(passwords)
    }

    pub fn get(&self, role: &str) -> Option<&Secret> {
        self.0.get(role)
    }
}

impl Agent {
    /// Step 6 of [`Agent::converge`]: present roles created or altered
    /// (never superuser, createdb, createrole, replication or bypassrls;
    /// the password set as a SCRAM verifier when one is given), then their
    /// memberships made what the spec lists, then present databases
    /// created with their owner, extensions and schemas; then absent
    /// databases and absent roles dropped, refusing with what is in the way.
    pub(crate) async fn converge_inside(
        &self,
        client: &Client,
        spec: &InstanceSpec,
        passwords: &RolePasswords,
    ) -> Result<()> {
        if spec.roles.is_empty() && spec.databases.is_empty() {
            return Ok(());
        }
        let present = |r: &&Role| r.ensure == Ensure::Present;
        for role in spec.roles.iter().filter(present) {
            self.converge_role(client, role, passwords.get(&role.name))
                .await?;
        }
        for role in spec.roles.iter().filter(present) {
            self.converge_memberships(client, role).await?;
        }
        let existing = existing_databases(client)
            .await
            .map_err(|e| self.sql_error("listing databases", e))?;
        for db in spec
            .databases
            .iter()
            .filter(|d| d.ensure == Ensure::Present)
        {
            self.converge_database(client, db, existing.get(&db.name))
                .await?;
        }
        for db in spec.databases.iter().filter(|d| d.ensure == Ensure::Absent) {
            if existing.contains_key(&db.name) {
                self.drop_database(client, &db.name).await?;
            }
        }
        for role in spec.roles.iter().filter(|r| r.ensure == Ensure::Absent) {
            self.drop_role(client, &role.name).await?;
        }
        Ok(())
    }

    fn inside_error(
        &self,
        op: &'static str,
        kind: &'static str,
        name: &str,
    ) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let data_dir = self.layout.data_dir.clone();
        let name = name.to_owned();
        move |source| Error::Inside {
            data_dir,
            op,
            kind,
            name,
            source,
        }
    }

    async fn converge_role(
        &self,
        client: &Client,
        role: &Role,
        password: Option<&Secret>,
    ) -> Result<()> {
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role.name])
            .await
            .map_err(|e| self.sql_error("looking up a role", e))?
            .is_some();
        let mut sql = format!(
            "{} ROLE {} WITH {} {} CONNECTION LIMIT {} \
             NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
            if exists { "ALTER" } else { "CREATE" },
            quote_ident(&role.name),
            if role.login { "LOGIN" } else { "NOLOGIN" },
            if role.inherit { "INHERIT" } else { "NOINHERIT" },
            role.connection_limit,
        );
        if let Some(password) = password {
            // The verifier contains no quote (base64 and `$:`).
            sql.push_str(&format!(" PASSWORD '{}'", password.scram_verifier()));
        }
        if !exists {
            tracing::info!(role = %role.name, "CREATE ROLE");
        }
        client.batch_execute(&sql).await.map_err(self.inside_error(
            if exists { "altering" } else { "creating" },
            "role",
            &role.name,
        ))
    }

    /// Grants the memberships the role lacks and revokes those it has but
    /// the spec does not list.
    async fn converge_memberships(&self, client: &Client, role: &Role) -> Result<()> {
        let have: BTreeSet<String> = memberships(client, &[role.name.as_str()])
            .await
            .map_err(|e| self.sql_error("reading role memberships", e))?
            .remove(&role.name)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let want: BTreeSet<String> = role.member_of.iter().cloned().collect();
        for target in want.difference(&have) {
            tracing::info!(role = %role.name, %target, "GRANT");
            let sql = format!(
                "GRANT {} TO {}",
                quote_ident(target),
                quote_ident(&role.name)
            );
            client.batch_execute(&sql).await.map_err(self.inside_error(
                "granting membership to",
                "role",
                &role.name,
            ))?;
        }
        for target in have.difference(&want) {
            tracing::info!(role = %role.name, %target, "REVOKE");
            let sql = format!(
                "REVOKE {} FROM {}",
                quote_ident(target),
                quote_ident(&role.name)
            );
            client.batch_execute(&sql).await.map_err(self.inside_error(
                "revoking membership from",
                "role",
                &role.name,
            ))?;
        }
        Ok(())
    }

    async fn converge_database(
        &self,
        client: &Client,
        db: &Database,
        owner: Option<&String>,
    ) -> Result<()> {
        let name = quote_ident(&db.name);
        let owner_ident = quote_ident(&db.owner);
        match owner {
            None => {
                tracing::info!(database = %db.name, owner = %db.owner, "CREATE DATABASE");
                client
                    .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner_ident}"))
                    .await
                    .map_err(self.inside_error("creating", "database", &db.name))?;
            }
            Some(current) if *current != db.owner => {
                tracing::info!(database = %db.name, owner = %db.owner, "ALTER DATABASE OWNER");
                client
                    .batch_execute(&format!("ALTER DATABASE {name} OWNER TO {owner_ident}"))
                    .await
                    .map_err(self.inside_error("changing the owner of", "database", &db.name))?;
            }
            Some(_) => {}
        }
        if db.extensions.is_empty() && db.schemas.is_empty() {
            return Ok(());
        }
        let inner = self
            .try_connect_to(ADMIN_ROLE, &db.name)
            .await
            .map_err(self.inside_error("connecting to", "database", &db.name))?;
        self.converge_extensions(&inner, &db.extensions, &db.owner)
            .await?;
        for schema in &db.schemas {
            let sql = format!(
                "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner_ident}; \
                 ALTER SCHEMA {schema} OWNER TO {owner_ident}",
                schema = quote_ident(schema)
            );
            inner.batch_execute(&sql).await.map_err(self.inside_error(
                "creating a schema in",
                "database",
                &db.name,
            ))?;
        }
        Ok(())
    }

    async fn drop_database(&self, client: &Client, name: &str) -> Result<()> {
        tracing::info!(database = name, "DROP DATABASE");
        let sql = format!("DROP DATABASE {}", quote_ident(name));
        match client.batch_execute(&sql).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                let reason = e
                    .as_db_error()
                    .map(|d| match d.detail() {
                        Some(detail) => format!("{} ({detail})", d.message()),
                        None => d.message().to_owned(),
                    })
                    .unwrap_or_else(|| "it is in use".to_owned());
                Err(Error::DatabaseInUse {
                    name: name.to_owned(),
                    reason,
                })
            }
            Err(e) => Err(self.inside_error("dropping", "database", name)(e)),
        }
    }

    async fn drop_role(&self, client: &Client, name: &str) -> Result<()> {
        let sql = format!("DROP ROLE IF EXISTS {}", quote_ident(name));
        match client.batch_execute(&sql).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {
                let dependents = e
                    .as_db_error()
                    .and_then(|d| d.detail())
                    .map(|d| d.replace('\n', "; "))
                    .unwrap_or_else(|| "objects in some database".to_owned());
                Err(Error::RoleInUse {
                    name: name.to_owned(),
                    dependents,
                })
            }
            Err(e) => Err(self.inside_error("dropping", "role", name)(e)),
        }
    }

    /// The declared roles and databases that exist, with what the spec
    /// declares about them; `None` when the spec declares neither (so a
    /// spec without them reports as it always did).
    pub(crate) async fn observe_inside(
        &self,
        client: &Client,
        spec: &InstanceSpec,
    ) -> Result<(Option<Vec<ObservedRole>>, Option<Vec<ObservedDatabase>>)> {
        let err = |e| self.sql_error("observing roles and databases", e);
        let roles = if spec.roles.is_empty() {
            None
        } else {
            let names: Vec<&str> = spec.roles.iter().map(|r| r.name.as_str()).collect();
            let mut member_of = memberships(client, &names).await.map_err(err)?;
            let rows = client
                .query(
                    "SELECT rolname::text, rolcanlogin, rolinherit, rolconnlimit FROM pg_roles \
                     WHERE rolname = ANY($1) ORDER BY rolname",
                    &[&names],
                )
                .await
                .map_err(err)?;
            Some(
                rows.iter()
                    .map(|r| {
                        let name: String = r.get(0);
                        ObservedRole {
                            member_of: member_of.remove(&name).unwrap_or_default(),
                            name,
                            login: r.get(1),
                            inherit: r.get(2),
                            connection_limit: r.get(3),
                        }
                    })
                    .collect(),
            )
        };
        if spec.databases.is_empty() {
            return Ok((roles, None));
        }
        let existing = existing_databases(client).await.map_err(err)?;
        let mut databases = Vec::new();
        for db in &spec.databases {
            let Some(owner) = existing.get(&db.name) else {
                continue;
            };
            let mut seen = ObservedDatabase {
                name: db.name.clone(),
                owner: owner.clone(),
                extension_versions: BTreeMap::new(),
                schemas: Vec::new(),
            };
            if db.ensure == Ensure::Present && !(db.extensions.is_empty() && db.schemas.is_empty())
            {
                let inner = self
                    .try_connect_to(ADMIN_ROLE, &db.name)
                    .await
                    .map_err(self.inside_error("connecting to", "database", &db.name))?;
                seen.extension_versions = crate::converge::installed_extensions(&inner)
                    .await
                    .map_err(err)?;
                seen.schemas = inner
                    .query(
                        "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1) ORDER BY 1",
                        &[&db.schemas],
                    )
                    .await
                    .map_err(err)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
            }
            databases.push(seen);
        }
        Ok((roles, Some(databases)))
    }
}

/// Every database but the templates: name → owner.
async fn existing_databases(
    client: &Client,
) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT datname::text, pg_get_userbyid(datdba)::text FROM pg_database \
             WHERE NOT datistemplate",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The roles each of `roles` is a direct member of, sorted.
async fn memberships(
    client: &Client,
    roles: &[&str],
) -> Result<BTreeMap<String, Vec<String>>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT m.rolname::text, g.rolname::text FROM pg_auth_members a \
             JOIN pg_roles m ON m.oid = a.member JOIN pg_roles g ON g.oid = a.roleid \
             WHERE m.rolname = ANY($1) ORDER BY 1, 2",
            &[&roles],
        )
        .await?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rows {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(out)
}
