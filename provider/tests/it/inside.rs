//! Databases and roles under Terraform: `role` and `database` blocks in
//! `pgplane_instance`, applied, read back without a diff, a bad owner
//! refused at plan time naming the block's attribute, and removal through
//! `ensure = "absent"`.

use crate::support::*;

const APPLY: &[&str] = &["apply", "-auto-approve", "-input=false", "-no-color"];
const PLAN: &[&str] = &["plan", "-detailed-exitcode", "-input=false", "-no-color"];

fn config(owner: &str, reader_ensure: &str) -> String {
    let reader = match reader_ensure {
        "absent" => "ensure = \"absent\"",
        _ => "member_of = [\"app\", \"pg_read_all_stats\"]\n    connection_limit = 5",
    };
    format!(
        r#"terraform {{
  required_providers {{
    pgplane = {{ source = "registry.pgplane.io/pgplane/pgplane" }}
  }}
}}
provider "pgplane" {{}}

resource "pgplane_instance" "shop" {{
  name = "shop"

  role {{
    name = "app"
  }}
  role {{
    name   = "reader"
    {reader}
  }}
  database {{
    name       = "shop"
    owner      = "{owner}"
    extensions = ["hstore", "citext"]
    schemas    = ["sales"]
  }}
}}
"#
    )
}

#[test]
fn declared_databases_and_roles_under_terraform() {
    let scratch = scratch_dir();
    let pgplane = Pgplane::up(scratch.path());
    let root = scratch.path().join("tf");
    std::fs::create_dir_all(&root).unwrap();
    let ws = Workspace::new(Tf::V1_15, &root, pgplane.env());
    ws.write(&config("app", "present"));
    ws.ok(&["init", "-input=false", "-no-color"]);
    ws.ok(APPLY);
    ws.expect(0, PLAN);

    let uri = pgplane
        .cli(&["instance", "credentials", "shop", "--role", "app"])
        .trim()
        .to_owned();
    assert!(
        uri.starts_with("postgres://app:") && uri.ends_with("/shop"),
        "{uri}"
    );
    assert_eq!(
        psql(
            &uri,
            "select pg_get_userbyid(datdba) || ' ' || \
             (select string_agg(extname, ',' order by extname) from pg_extension where extname <> 'plpgsql') || ' ' || \
             (select pg_get_userbyid(nspowner) from pg_namespace where nspname = 'sales') \
             from pg_database where datname = current_database()"
        ),
        "app citext,hstore app"
    );
    let reader = pgplane
        .cli(&["instance", "credentials", "shop", "--role", "reader"])
        .trim()
        .to_owned();
    assert_eq!(psql(&reader, "select pg_has_role('app', 'member')"), "t");

    // An owner no block declares: refused before anything is sent.
    ws.write(&config("nobody", "present"));
    let bad = ws.expect(1, PLAN);
    assert!(
        bad.all()
            .contains("owner \"nobody\" is not a declared role"),
        "{}",
        bad.all()
    );
    assert!(bad.all().contains("database.0.owner"), "{}", bad.all());

    ws.write(&config("app", "absent"));
    let plan = ws.expect(2, PLAN);
    assert!(plan.all().contains("absent"), "{}", plan.all());
    ws.ok(APPLY);
    ws.expect(0, PLAN);
    assert!(psql_fails(&reader));
    assert_eq!(psql(&uri, "select current_user"), "app");
    ws.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}
