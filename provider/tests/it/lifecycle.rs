//! The whole life of instances under Terraform, for both Terraform versions
//! and OpenTofu:
//! init → apply → connect → update in place → empty plan → drift → re-apply
//! → import (by ORG/NAME and by id) → deleted outside → re-create → data
//! sources → destroy.

use crate::support::*;

const APPLY: &[&str] = &["apply", "-auto-approve", "-input=false", "-no-color"];
const PLAN: &[&str] = &["plan", "-detailed-exitcode", "-input=false", "-no-color"];

fn orders(work_mem: &str, max_connections: &str) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    pgplane = {{ source = "registry.pgplane.io/pgplane/pgplane" }}
  }}
}}
provider "pgplane" {{}}

resource "pgplane_instance" "orders" {{
  name             = "orders"
  postgres_version = "15"
  extensions       = ["pg_stat_statements", "hstore"]
  config           = {{ work_mem = "{work_mem}", max_connections = "{max_connections}" }}
  timeouts {{ create = "5m" }}
}}

output "uri" {{
  value     = pgplane_instance.orders.connection_uri
  sensitive = true
}}
"#
    )
}

const IMPORTED: &str = r#"
resource "pgplane_instance" "legacy" {
  name       = "legacy"
  extensions = ["hstore"]
  config     = { work_mem = "8MB" }
}

resource "pgplane_instance" "by_id" {
  name   = "by-id"
  memory = "512Mi"
}
"#;

const DATA_SOURCES: &str = r#"
terraform {
  required_providers {
    pgplane = { source = "registry.pgplane.io/pgplane/pgplane" }
  }
}
data "pgplane_instance" "orders" {
  name = "orders"
}
data "pgplane_instances" "up" {
  state = "Up"
}
output "orders_work_mem" {
  value = data.pgplane_instance.orders.config["work_mem"]
}
output "orders_connection" {
  value     = "${data.pgplane_instance.orders.user}:${data.pgplane_instance.orders.password}@${data.pgplane_instance.orders.host}:${data.pgplane_instance.orders.port}/${data.pgplane_instance.orders.dbname}"
  sensitive = true
}
output "up_names" {
  value = sort([for i in data.pgplane_instances.up.instances : i.name])
}
"#;

fn lifecycle(tf: Tf) {
    let scratch = scratch_dir();
    let pgplane = Pgplane::up(scratch.path());
    let ws = Workspace::new(tf, scratch.path(), pgplane.env());

    // init (offline, from the filesystem mirror) and apply: returns when Up.
    ws.write(&orders("16MB", "150"));
    ws.ok(&["init", "-input=false", "-no-color"]);
    let applied = ws.ok(APPLY);
    assert!(applied.stdout.contains("1 added"), "{}", applied.all());
    let uri = ws.ok(&["output", "-raw", "uri"]).stdout;
    assert!(uri.starts_with("postgres://"), "{uri}");
    assert_eq!(psql(&uri, "show work_mem"), "16MB");
    assert_eq!(psql(&uri, "show max_connections"), "150");
    assert_eq!(
        psql(
            &uri,
            "select string_agg(extname, ',' order by extname) from pg_extension"
        ),
        "hstore,pg_stat_statements,plpgsql"
    );
    // Right after apply: no perpetual diff (extension order, defaults).
    ws.expect(0, PLAN);

    // Update in place; the plan says Postgres restarts (max_connections).
    ws.write(&orders("32MB", "160"));
    let plan = ws.expect(2, PLAN);
    assert!(plan.stdout.contains("update in-place"), "{}", plan.all());
    assert!(!plan.stdout.contains("must be replaced"), "{}", plan.all());
    assert!(
        plan.all().contains("this update restarts Postgres"),
        "{}",
        plan.all()
    );
    assert!(
        plan.all().contains("max_connections changed (150 → 160)"),
        "{}",
        plan.all()
    );
    let applied = ws.ok(APPLY);
    assert!(applied.stdout.contains("1 changed"), "{}", applied.all());
    assert_eq!(psql(&uri, "show work_mem"), "32MB");
    assert_eq!(psql(&uri, "show max_connections"), "160");
    ws.expect(0, PLAN);

    // Changed outside Terraform: the plan shows exactly that change.
    pgplane.cli(&[
        "instance",
        "update",
        "orders",
        "--config",
        "work_mem=64MB",
        "--wait",
        "--override-owner",
    ]);
    let plan = ws.expect(2, PLAN);
    assert!(
        plan.stdout
            .contains(r#""work_mem"        = "64MB" -> "32MB""#),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout.contains("0 to add, 1 to change, 0 to destroy"),
        "{}",
        plan.all()
    );
    ws.ok(APPLY);
    assert_eq!(psql(&uri, "show work_mem"), "32MB");
    ws.expect(0, PLAN);

    // Superuser access is an explicit opt-in, and can be taken back.
    let rolsuper = "select rolsuper from pg_roles where rolname = current_user";
    assert_eq!(psql(&uri, rolsuper), "f");
    ws.write(
        &orders("32MB", "160").replace("  timeouts {", "  superuser_access = true\n  timeouts {"),
    );
    let plan = ws.expect(2, PLAN);
    assert!(
        plan.stdout.contains("+ superuser_access = true"),
        "{}",
        plan.all()
    );
    ws.ok(APPLY);
    assert_eq!(psql(&uri, rolsuper), "t");
    ws.expect(0, PLAN);
    ws.write(&orders("32MB", "160"));
    ws.ok(APPLY);
    assert_eq!(psql(&uri, rolsuper), "f");
    ws.expect(0, PLAN);

    // Import instances created with the CLI: by ORG/NAME and by id.
    pgplane.cli(&[
        "instance",
        "create",
        "legacy",
        "--extension",
        "hstore",
        "--config",
        "work_mem=8MB",
        "--wait",
    ]);
    pgplane.cli(&["instance", "create", "by-id", "--memory", "512Mi", "--wait"]);
    let by_id: serde_json::Value =
        serde_json::from_str(&pgplane.cli(&["instance", "get", "by-id", "-o", "json"])).unwrap();
    let id = by_id["id"].as_str().unwrap();
    ws.write(&(orders("32MB", "160") + IMPORTED));
    let wrong_org = ws.expect(
        1,
        &[
            "import",
            "-input=false",
            "-no-color",
            "pgplane_instance.legacy",
            "acme/legacy",
        ],
    );
    assert!(
        wrong_org
            .all()
            .contains("not the organisation of the provider's token"),
        "{}",
        wrong_org.all()
    );
    ws.ok(&[
        "import",
        "-input=false",
        "-no-color",
        "pgplane_instance.legacy",
        "default/legacy",
    ]);
    ws.ok(&[
        "import",
        "-input=false",
        "-no-color",
        "pgplane_instance.by_id",
        id,
    ]);
    ws.expect(0, PLAN);
    // Importing took them over: Terraform owns them now, the history says
    // so, and the CLI changes them only when it overrides.
    for name in ["legacy", "by-id"] {
        assert_eq!(
            instance_json(&pgplane, name)["owner"],
            "terraform",
            "{name}"
        );
    }
    let shown = ws
        .ok(&["state", "show", "-no-color", "pgplane_instance.legacy"])
        .stdout;
    assert!(shown.contains(r#""terraform""#), "{shown}");
    let history = pgplane.cli(&["instance", "history", "legacy"]);
    assert!(history.contains("api → terraform"), "{history}");
    let refused = pgplane.cli_fails(&["instance", "update", "legacy", "--config", "work_mem=9MB"]);
    assert!(refused.contains("managed by terraform"), "{refused}");
    ws.expect(0, PLAN);

    // Deleted outside Terraform: planned for re-creation, not an error.
    pgplane.cli(&["instance", "delete", "by-id", "--wait", "--override-owner"]);
    let plan = ws.expect(2, PLAN);
    assert!(
        plan.stdout
            .contains("pgplane_instance.by_id will be created"),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout.contains("1 to add, 0 to change, 0 to destroy"),
        "{}",
        plan.all()
    );
    ws.ok(APPLY);
    ws.expect(0, PLAN);

    // An instance that fails on the data plane (more memory than any
    // machine has, refused whatever the kernel's overcommit setting): the
    // apply fails with the data plane's reason, and the id is in the state
    // (nothing orphaned). Fixing it replaces the failed instance.
    let failing = |memory: &str| {
        format!(
            "{}{IMPORTED}\nresource \"pgplane_instance\" \"bad\" {{\n  name   = \"bad\"\n  \
             memory = \"{memory}\"\n}}\n",
            orders("32MB", "160")
        )
    };
    ws.write(&failing("64Ti"));
    let failed = ws.expect(1, APPLY);
    assert!(
        failed.all().contains(r#"Instance "bad" failed to create"#),
        "{}",
        failed.all()
    );
    assert!(
        failed
            .all()
            .contains("more memory than this data plane has"),
        "{}",
        failed.all()
    );
    let shown = ws
        .ok(&["state", "show", "-no-color", "pgplane_instance.bad"])
        .stdout;
    assert!(shown.contains(r#"state            = "Error""#), "{shown}");
    assert!(shown.contains("id "), "{shown}");
    ws.write(&failing("512Mi"));
    let fixed = ws.ok(APPLY);
    assert!(
        fixed.stdout.contains("1 added, 0 changed, 1 destroyed"),
        "{}",
        fixed.all()
    );
    ws.expect(0, PLAN);

    // Data sources, from a second configuration.
    let reader = Workspace::new(tf, &scratch.path().join("reader"), pgplane.env());
    reader.write(DATA_SOURCES);
    reader.ok(&["init", "-input=false", "-no-color"]);
    reader.ok(APPLY);
    let outputs: serde_json::Value =
        serde_json::from_str(&reader.ok(&["output", "-json"]).stdout).unwrap();
    assert_eq!(outputs["orders_work_mem"]["value"], "32MB");
    let connection = outputs["orders_connection"]["value"].as_str().unwrap();
    assert_eq!(
        uri.strip_prefix("postgres://"),
        Some(connection),
        "the data source's attributes and the resource's URI disagree"
    );
    assert_eq!(
        outputs["up_names"]["value"],
        serde_json::json!(["bad", "by-id", "legacy", "orders"])
    );

    // Destroy waits for Deleted; nothing is left.
    let destroyed = ws.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    assert!(
        destroyed.stdout.contains("4 destroyed"),
        "{}",
        destroyed.all()
    );
    let left: serde_json::Value =
        serde_json::from_str(&pgplane.cli(&["instance", "list", "-o", "json"])).unwrap();
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] != "Deleted")
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
    assert!(
        psql_fails(&uri),
        "the destroyed instance still accepts connections"
    );
}

#[test]
fn lifecycle_terraform_1_15() {
    lifecycle(Tf::V1_15);
}

#[test]
fn lifecycle_terraform_1_0() {
    lifecycle(Tf::V1_0);
}

#[test]
fn lifecycle_tofu() {
    lifecycle(Tf::Tofu);
}
