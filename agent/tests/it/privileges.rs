//! What the credentials an instance hands out can do, tried as an attacker
//! would: the client role owns its database and nothing beyond it, unless
//! the spec opts in to superuser access.

use agent::ADMIN_ROLE;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::{spec, TestInstance};

/// Statements that reach the server's programs, files, configuration or
/// other roles; each must be refused with `insufficient_privilege`.
const ATTACKS: &[&str] = &[
    "COPY (SELECT 1) TO PROGRAM 'id'",
    "CREATE TEMP TABLE t (line text); COPY t FROM PROGRAM 'cat /etc/passwd'",
    "CREATE TEMP TABLE t2 (line text); COPY t2 FROM '/etc/passwd'",
    "COPY (SELECT 1) TO '/tmp/pgplane-attack'",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_read_binary_file('postgresql.auto.conf')",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(lo_create(0), '/tmp/pgplane-attack')",
    "CREATE LANGUAGE untrusted HANDLER plpgsql_call_handler",
    "CREATE EXTENSION file_fdw",
    "CREATE EXTENSION adminpack",
    "ALTER SYSTEM SET work_mem = '1MB'",
    "SELECT pg_reload_conf()",
    "ALTER ROLE postgres SUPERUSER",
    "GRANT pg_execute_server_program TO postgres",
    "GRANT pg_read_server_files TO postgres",
    "CREATE ROLE intruder SUPERUSER",
    "SET ROLE pgplane",
    "SET SESSION AUTHORIZATION pgplane",
];

#[tokio::test]
async fn the_client_role_owns_its_database_and_nothing_more() {
    let t = TestInstance::created().await;
    let client = t.client().await;
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolcreaterole, \
             (SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()) \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    let (user, superuser, createrole, owner): (String, bool, bool, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(user, "postgres");
    assert!(!superuser && !createrole);
    assert_eq!(owner, "postgres");

    // What an application owner needs works.
    client
        .batch_execute(
            "CREATE SCHEMA app; \
             CREATE TABLE app.orders (id bigint PRIMARY KEY, note text); \
             INSERT INTO app.orders VALUES (1, 'x'); \
             CREATE FUNCTION app.n() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM app.orders'; \
             CREATE EXTENSION hstore",
        )
        .await
        .expect("an owner's statements");
    client
        .batch_execute("CREATE DATABASE other")
        .await
        .expect("CREATEDB");
    let stats: i64 = client
        .query_one("SELECT count(*) FROM pg_stat_activity", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stats >= 1);

    for attack in ATTACKS {
        let err = client
            .batch_execute(attack)
            .await
            .expect_err(&format!("{attack} must be refused"));
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{attack}: {err:?}"
        );
    }
    let observed = t.agent.observe(&spec(&[], &[])).await.unwrap();
    assert_eq!(observed.superuser_access, Some(false));
}

#[tokio::test]
async fn pgplane_s_own_role_never_logs_in_over_tcp() {
    let t = TestInstance::created().await;
    let info = t.agent.connection();
    for password in ["", t.password.expose()] {
        let err = tokio_postgres::Config::new()
            .host(&info.host)
            .port(info.port)
            .user(ADMIN_ROLE)
            .dbname("postgres")
            .password(password)
            .connect(NoTls)
            .await
            .err()
            .expect("pgplane's role must be refused over TCP");
        let db = err.as_db_error().map(|e| e.code().clone());
        assert_eq!(
            db,
            Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn superuser_access_is_an_explicit_opt_in_and_can_be_taken_back() {
    let t = TestInstance::created().await;
    let mut s = spec(&[], &[]);
    s.superuser_access = true;
    let out = t.agent.converge(&s, false).await.unwrap();
    assert_eq!(out.observed.superuser_access, Some(true));
    let client = t.client().await;
    client
        .batch_execute("CREATE TEMP TABLE who (name text); COPY who FROM PROGRAM 'id -un'")
        .await
        .expect("a superuser runs programs");
    let who: String = client
        .query_one("SELECT name FROM who", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, t.agent.run_as().name(), "the server's own OS user");
    client
        .batch_execute("GRANT pg_execute_server_program TO postgres")
        .await
        .unwrap();
    drop(client);

    s.superuser_access = false;
    let out = t.agent.converge(&s, false).await.unwrap();
    assert_eq!(out.observed.superuser_access, Some(false));
    let err = t
        .client()
        .await
        .batch_execute("COPY (SELECT 1) TO PROGRAM 'id'")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "the predefined role granted while superuser is gone too: {err:?}"
    );
}
