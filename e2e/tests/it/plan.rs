//! `pgplane plan -f DIR` from the outside: exit codes like
//! `terraform plan -detailed-exitcode`, every manifest error at once.

use crate::support::*;

fn manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: pgplane.io/v1\nkind: PostgresInstance\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

#[test]
fn plan_exit_codes_and_errors() {
    let dir = scratch_dir();
    let d = dir.path().to_str().unwrap();
    let no_token = [
        ("PGPLANE_TOKEN", ""),
        ("PGPLANE_ENDPOINT", "http://127.0.0.1:1"),
    ];
    let plan = |args: &[&str]| {
        let mut all = vec!["plan"];
        all.extend_from_slice(args);
        std::process::Command::new(pgplane_bin())
            .args(&all)
            .env_remove("PGPLANE_TOKEN")
            .envs(no_token[1..].iter().copied())
            .output()
            .unwrap()
    };
    let o = plan(&["-f", d]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    std::fs::write(
        dir.path().join("orders.yaml"),
        manifest(
            "orders",
            "  extensions:\n    - name: hstore\n  config:\n    work_mem: 16MB\n",
        ),
    )
    .unwrap();
    let o = plan(&["-f", d, "-o", "json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(json.to_string().contains("orders"), "{json}");

    std::fs::write(
        dir.path().join("bad.yaml"),
        manifest("Bad_Name", "  config:\n    port: \"5433\"\n  replica: 2\n"),
    )
    .unwrap();
    let o = plan(&["-f", d]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("bad.yaml:4"),
        "name error with its line: {err}"
    );
    assert!(err.contains("spec.config.port"), "{err}");
    assert!(err.contains("replica"), "{err}");
}
