//! Standbys under Terraform: `replicas` changes in place, the read-write
//! and read-only URIs reach the primary and a standby, and an out-of-range
//! count is an error at its attribute before anything is created.

use crate::support::*;

const APPLY: &[&str] = &["apply", "-auto-approve", "-input=false", "-no-color"];
const PLAN: &[&str] = &["plan", "-detailed-exitcode", "-input=false", "-no-color"];

fn config(replicas: &str) -> String {
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
        ws.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    }
}
