//! Declared roles and databases on a real server: created with their
//! passwords, owners, extensions and schemas; observed back; left alone
//! when undeclared; dropped only when declared absent, refusing with what
//! is in the way.

use std::collections::BTreeMap;

use agent::{Error, RolePasswords, Secret};
use domain::{Database, Ensure, Extension, InstanceSpec, Role};
use tokio_postgres::NoTls;

use crate::support::TestInstance;

fn declared(roles: Vec<Role>, databases: Vec<Database>) -> InstanceSpec {
    InstanceSpec {
        roles,
        databases,
        ..InstanceSpec::default()
    }
}

async fn connect_as(
    t: &TestInstance,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let info = t.agent.connection();
    let (client, conn) = tokio_postgres::Config::new()
        .host(&info.host)
        .port(info.port)
        .user(user)
        .dbname(database)
        .password(password)
        .connect(NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

#[tokio::test]
async fn declared_roles_and_databases_are_created_observed_and_dropped_only_when_absent() {
    let t = TestInstance::created().await;
    let app_password = Secret::generate();
    let passwords = RolePasswords::new(BTreeMap::from([
        ("app".to_owned(), app_password.clone()),
        ("reader".to_owned(), Secret::generate()),
    ]));
    let mut reader = Role::new("reader");
    reader.member_of = vec!["app".into(), "pg_read_all_data".into()];
    reader.connection_limit = 3;
    let mut shop = Database::new("shop", "app");
    shop.extensions = vec![Extension::new("hstore"), Extension::new("citext")];
    shop.schemas = vec!["sales".into()];
    let spec = declared(vec![Role::new("app"), reader], vec![shop]);
    let out = t
        .agent
        .converge_with(&spec, false, &passwords)
        .await
        .unwrap();
    assert_eq!(
        domain::drift(&spec, &out.observed),
        vec![],
        "{:?}",
        out.observed
    );

    // The role logs in with its password, into the database it owns, where
    // the extensions and the schema are.
    let app = connect_as(&t, "app", app_password.expose(), "shop")
        .await
        .expect("app logs in with its password");
    let row = app
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text, \
                    (SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension WHERE extname <> 'plpgsql'), \
                    (SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'sales') \
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    let (owner, exts, schema_owner): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (owner.as_str(), exts.as_str(), schema_owner.as_str()),
        ("app", "citext,hstore", "app")
    );
    app.batch_execute("CREATE TABLE sales.tags (labels hstore)")
        .await
        .unwrap();
    drop(app);
    assert!(
        connect_as(&t, "app", "wrong", "shop").await.is_err(),
        "a wrong password is refused"
    );

    // Undeclared: a role made by hand is neither touched nor drift; a
    // declared role dropped by hand is drift, and converging brings it back
    // with the same password.
    let admin = t.client().await;
    admin
        .batch_execute("CREATE ROLE handmade NOLOGIN")
        .await
        .expect_err("the client role has no CREATEROLE");
    let observed = t.agent.observe(&spec).await.unwrap();
    assert!(observed
        .roles
        .as_ref()
        .unwrap()
        .iter()
        .all(|r| r.name != "handmade"));
    let superuser = t.agent.start_or_restore().await.unwrap();
    superuser
        .batch_execute("CREATE ROLE handmade NOLOGIN; DROP ROLE reader")
        .await
        .unwrap();
    let observed = t.agent.observe(&spec).await.unwrap();
    let drift = domain::drift(&spec, &observed);
    let paths: Vec<&str> = drift.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["roles.reader"], "{drift:?}");
    assert_eq!(drift[0].observed.as_deref(), Some("absent"));
    let out = t
        .agent
        .converge_with(&spec, false, &passwords)
        .await
        .unwrap();
    assert_eq!(domain::drift(&spec, &out.observed), vec![]);
    let exists = |name: &'static str| {
        let superuser = &superuser;
        async move {
            superuser
                .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
                .await
                .unwrap()
                .is_some()
        }
    };
    assert!(exists("reader").await && exists("handmade").await);

    // A membership added by hand is revoked: memberOf is the whole list.
    superuser
        .batch_execute("GRANT pg_monitor TO app")
        .await
        .unwrap();
    let observed = t.agent.observe(&spec).await.unwrap();
    assert_eq!(domain::drift(&spec, &observed)[0].path, "roles.app");
    t.agent
        .converge_with(&spec, false, &passwords)
        .await
        .unwrap();

    // Absent: the owning role cannot go while it owns something; the
    // database cannot go while someone is connected.
    let mut gone = spec.clone();
    gone.databases[0] = Database {
        ensure: Ensure::Absent,
        ..Database::new("shop", "app")
    };
    gone.roles.retain(|r| r.name != "reader");
    let held = connect_as(&t, "app", app_password.expose(), "shop")
        .await
        .unwrap();
    let err = t
        .agent
        .converge_with(&gone, false, &passwords)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DatabaseInUse { .. }), "{err}");
    assert!(
        err.to_string().contains("is being accessed by other users"),
        "{err}"
    );
    drop(held);
    let out = crate::support::eventually(
        "the session to end",
        std::time::Duration::from_secs(10),
        || {
            let (agent, gone, passwords) = (&t.agent, &gone, &passwords);
            async move { agent.converge_with(gone, false, passwords).await.ok() }
        },
    )
    .await;
    assert_eq!(domain::drift(&gone, &out.observed), vec![]);
    assert!(exists("reader").await, "a role left out of the spec stays");

    superuser
        .batch_execute("CREATE TABLE owned_by_app (x int); ALTER TABLE owned_by_app OWNER TO app")
        .await
        .unwrap();
    let mut app_gone = gone.clone();
    app_gone.roles = vec![Role {
        ensure: Ensure::Absent,
        ..Role::new("app")
    }];
    app_gone.databases.clear();
    let err = t
        .agent
        .converge_with(&app_gone, false, &passwords)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RoleInUse { .. }), "{err}");
    assert!(
        err.to_string().contains("owner of table owned_by_app"),
        "{err}"
    );
    superuser
        .batch_execute("DROP TABLE owned_by_app; REVOKE app FROM reader")
        .await
        .unwrap();
    t.agent
        .converge_with(&app_gone, false, &passwords)
        .await
        .unwrap();
    assert!(!exists("app").await);
}

#[tokio::test]
async fn the_agent_refuses_memberships_that_reach_the_server() {
    let t = TestInstance::created().await;
    for target in [
        "pg_execute_server_program",
        "pg_read_server_files",
        "pgplane",
    ] {
        let mut role = Role::new("sneaky");
        role.member_of = vec![target.to_owned()];
        let err = t
            .agent
            .converge(&declared(vec![role], vec![]), false)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InsideRefused(_)), "{target}: {err}");
        assert!(
            err.to_string().contains("spec.roles[0].memberOf[0]"),
            "{err}"
        );
    }
    let superuser = t.agent.start_or_restore().await.unwrap();
    let row = superuser
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = 'sneaky'", &[])
        .await
        .unwrap();
    assert!(row.is_none(), "nothing was created");
}
