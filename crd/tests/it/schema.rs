//! What the generated schema enforces, checked on the CRD object itself.

use kube::{CustomResourceExt, Resource};
use serde_json::{json, Value};

fn crd_json() -> Value {
    serde_json::to_value(crd::PostgresInstance::crd()).unwrap()
}

fn spec_schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn names_group_version_scope_and_short_names() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], "postgresinstances.pgplane.io");
    assert_eq!(crd["spec"]["group"], "pgplane.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "PostgresInstance");
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        json!(["pginstances", "pgi"])
    );
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1");
    assert_eq!(
        crd["spec"]["versions"][0]["subresources"],
        json!({"status": {}})
    );
    assert_eq!(crd::PostgresInstance::api_version(&()), "pgplane.io/v1");
}

#[test]
fn printer_columns_are_state_version_ready_age() {
    let cols = crd_json()["spec"]["versions"][0]["additionalPrinterColumns"].clone();
    let names: Vec<&str> = cols
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["State", "Version", "Ready", "Age"]);
    assert_eq!(
        cols[2]["jsonPath"],
        r#".status.conditions[?(@.type=="Ready")].status"#
    );
}

#[test]
fn spec_fields_have_domain_defaults_and_bounds() {
    let s = spec_schema();
    let p = &s["properties"];
    assert_eq!(p["postgresVersion"]["default"], "15");
    assert_eq!(
        p["postgresVersion"]["enum"],
        json!(domain::validate::SUPPORTED_VERSIONS)
    );
    assert_eq!(p["replicas"]["default"], 1);
    assert_eq!(p["replicas"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(
        p["replicas"]["maximum"].as_f64(),
        Some(f64::from(domain::validate::MAX_REPLICAS_KUBERNETES))
    );
    assert_eq!(p["storage"]["default"], "10Gi");
    assert!(p["storage"]["pattern"].is_string());
    assert_eq!(
        p["resources"]["default"],
        json!({"cpu": "1", "memory": "1Gi"})
    );
    assert_eq!(p["config"]["additionalProperties"]["type"], "string");
    assert!(p["extensions"]["items"]["properties"]["name"]["pattern"].is_string());
}

#[test]
fn spec_round_trips_through_the_domain_type() {
    let domain_spec: domain::InstanceSpec = serde_json::from_value(json!({
        "postgresVersion": "15",
        "extensions": [{"name": "pg_stat_statements"}],
        "config": {"work_mem": "16MB"},
    }))
    .unwrap();
    let crd_spec = crd::PostgresInstanceSpec::from(domain_spec.clone());
    // Same JSON shape on both sides, so manifests and CRs are interchangeable.
    assert_eq!(
        serde_json::to_value(&crd_spec).unwrap(),
        serde_json::to_value(&domain_spec).unwrap()
    );
    assert_eq!(domain::InstanceSpec::from(crd_spec), domain_spec);
    assert_eq!(
        crd::PostgresInstanceSpec::default(),
        domain::InstanceSpec::default().into()
    );
}

#[test]
fn status_conditions_and_connection_have_no_password() {
    let status = crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["status"]
        .clone();
    let cond = &status["properties"]["conditions"]["items"];
    assert_eq!(
        cond["properties"]["type"]["enum"],
        json!(["Ready", "Progressing", "PendingRestart", "Degraded"])
    );
    let mut required: Vec<&str> = cond["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(required, ["lastTransitionTime", "reason", "status", "type"]);
    let conn: Vec<&String> = status["properties"]["connection"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(conn, ["database", "host", "port", "secretName", "user"]);
}
