//! Standbys under Terraform: `replicas` and `synchronous` change in place,
//! the read-write and read-only URIs reach the primary and a standby, and
//! an out-of-range count or a bad `synchronous` is an error at its
//! attribute before anything is created.

use crate::support::*;

const APPLY: &[&str] = &["apply", "-auto-approve", "-input=false", "-no-color"];
const PLAN: &[&str] = &["plan", "-detailed-exitcode", "-input=false", "-no-color"];

fn config(replicas: &str) -> String {
    config_with(replicas, "")
}

/// `extra`: more attributes of the resource.
fn config_with(replicas: &str, extra: &str) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    pgplane = {{ source = "registry.pgplane.io/pgplane/pgplane" }}
  }}
}}
provider "pgplane" {{}}

resource "pgplane_instance" "ha" {{
  name     = "ha"
  replicas = {replicas}
  {extra}
}}

output "rw" {{
  value     = pgplane_instance.ha.read_write_uri
  sensitive = true
}}

output "ro" {{
  value     = pgplane_instance.ha.read_only_uri
  sensitive = true
}}
"#
    )
}

#[test]
fn replicas_change_in_place_and_the_uris_reach_primary_and_standby() {
    let scratch = scratch_dir();
    let pgplane = Pgplane::up(scratch.path());
    for tf in [Tf::V1_15, Tf::V1_0] {
        let ws = Workspace::new(tf, &scratch.path().join(format!("{tf:?}")), pgplane.env());
        ws.write(&config("9"));
        ws.ok(&["init", "-input=false", "-no-color"]);
        let refused = ws.expect(1, PLAN);
        assert!(
            refused.stderr.contains("replicas") && refused.stderr.contains("between 1 and 5"),
            "{}",
            refused.stderr
        );
        ws.write(&config_with("2", r#"synchronous = "sometimes""#));
        let refused = ws.expect(1, PLAN);
        assert!(
            refused.stderr.contains("synchronous") && refused.stderr.contains("\"sometimes\""),
            "{}",
            refused.stderr
        );
        ws.write(&config_with("1", r#"synchronous = "on""#));
        let refused = ws.expect(1, PLAN);
        assert!(
            refused.stderr.contains("synchronous") && refused.stderr.contains("replicas"),
            "{}",
            refused.stderr
        );
        if tf == Tf::V1_0 {
            continue;
        }
        ws.write(&config("1"));
        ws.ok(APPLY);
        let rw = ws.ok(&["output", "-raw", "rw"]).stdout;
        psql(&rw, "create table t (i int); insert into t values (1)");
        ws.write(&config("2"));
        let plan = ws.expect(2, PLAN).stdout;
        assert!(plan.contains("update in-place"), "{plan}");
        assert!(!plan.contains("must be replaced"), "{plan}");
        ws.ok(APPLY);
        ws.expect(0, PLAN);
        let rw = ws.ok(&["output", "-raw", "rw"]).stdout;
        let ro = ws.ok(&["output", "-raw", "ro"]).stdout;
        assert!(
            rw.contains("target_session_attrs=read-write"),
            "the read-write URI lists no members"
        );
        assert_eq!(psql(&rw, "select pg_is_in_recovery()"), "f");
        assert_eq!(psql(&ro, "select pg_is_in_recovery()"), "t");
        assert_eq!(psql(&rw, "show synchronous_standby_names"), "");
        // Synchronous replication is a reload: in place, same server.
        let started = psql(&rw, "select pg_postmaster_start_time()");
        ws.write(&config_with("2", r#"synchronous = "on""#));
        let plan = ws.expect(2, PLAN).stdout;
        assert!(plan.contains("update in-place"), "{plan}");
        ws.ok(APPLY);
        ws.expect(0, PLAN);
        assert_eq!(psql(&rw, "show synchronous_standby_names"), "ANY 1 (*)");
        assert_eq!(psql(&rw, "select pg_postmaster_start_time()"), started);
        psql(&rw, "insert into t values (2)");
        ws.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    }
}
