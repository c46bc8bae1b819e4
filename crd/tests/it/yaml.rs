//! `crd/pgplane.io_postgresinstances.yaml` is generated from the Rust types.
//! Run with `PGPLANE_UPDATE_CRD=1` to rewrite it.

use std::path::Path;

#[test]
fn committed_crd_yaml_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(crd::CRD_FILE);
    let generated = crd::crd_yaml();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        if std::env::var_os("PGPLANE_UPDATE_CRD").is_some() {
            std::fs::write(&path, generated).unwrap();
        } else {
            panic!(
                "{} is stale: run `PGPLANE_UPDATE_CRD=1 cargo test -p crd --test it yaml`",
                path.display()
            );
        }
    }
}

#[test]
fn committed_crd_yaml_parses_back_to_the_same_crd() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    let parsed: CustomResourceDefinition = serde_yaml::from_str(&crd::crd_yaml()).unwrap();
    assert_eq!(parsed, crd::PostgresInstance::crd());
}
