//! The single-node cluster itself: a pod of the instance image runs
//! Postgres and a client on the host reaches it; the offline instance image
//! agrees with examples/kubernetes/Dockerfile.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::PostParams;
use kube::Api;
use kubetest::{Cluster, INSTANCE_IMAGE, POSTGRES_UID};

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_of_the_instance_image_serves_postgres_to_the_host() {
    let cluster = Cluster::start().await;
    eprintln!("cluster start → node Ready: {:?}", cluster.start_to_ready);
    let client = cluster.client();
    let (spec, pod) = kubetest::bare_pod("bare", "bare-secret");
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &spec)
        .await
        .unwrap();
    let created = Instant::now();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let pod = cluster
        .pod_ready("default", "bare", Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ip = pod.status.unwrap().pod_ip.expect("a Ready pod has an IP");
    let (pg, conn) = tokio_postgres::connect(
        &format!("host={ip} port=5432 user=postgres password=bare-secret dbname=postgres connect_timeout=10"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {ip}:5432: {e:?}\n{}", cluster.container_logs("default", "bare")));
    let connectable = created.elapsed();
    tokio::spawn(conn);
    eprintln!("pod create → Postgres connectable: {connectable:?}");
    let row = pg
        .query_one(
            "select current_setting('server_version_num')::int, current_user::text",
            &[],
        )
        .await
        .unwrap();
    let version: i32 = row.get(0);
    assert_eq!(version / 10000, 15);
    assert_eq!(row.get::<_, String>(1), "postgres");
}

/// The instructions of the Dockerfile's `instance` stage.
fn dockerfile_instance_stage() -> Vec<String> {
    let path = kubetest::repo_root().join("examples/kubernetes/Dockerfile");
    let text = std::fs::read_to_string(path).unwrap();
    let mut in_stage = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(from) = line.strip_prefix("FROM ") {
            in_stage = from.ends_with(" AS instance");
        } else if in_stage && !line.starts_with('#') && !line.trim().is_empty() {
            out.push(line.to_owned());
        }
    }
    out
}

fn tar_member(tar: &std::path::Path, member: &str) -> Vec<u8> {
    let out = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -xOf {} {member}", tar.display());
    out.stdout
}

/// The offline image and the Dockerfile agree on what the operator's pod
/// spec and the agent rely on: the user and its uid, the entrypoint, PATH,
/// the port, and where pgplane is.
#[test]
fn the_offline_instance_image_matches_the_dockerfile() {
    let images = kubetest::build_images();
    let tar = &images
        .iter()
        .find(|(name, _)| name == INSTANCE_IMAGE)
        .unwrap()
        .1;
    let manifest: serde_json::Value =
        serde_json::from_slice(&tar_member(tar, "manifest.json")).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&tar_member(tar, manifest[0]["Config"].as_str().unwrap())).unwrap();
    let config = &config["config"];
    let stage = dockerfile_instance_stage();
    let has = |line: &str| stage.iter().any(|l| l == line);

    let user = config["User"].as_str().unwrap();
    assert!(
        has(&format!("USER {user}")),
        "image user {user}; Dockerfile: {stage:#?}"
    );
    let entrypoint = serde_json::to_string(&config["Entrypoint"])
        .unwrap()
        .replace(',', ", ");
    assert!(
        has(&format!("ENTRYPOINT {entrypoint}")),
        "image entrypoint {entrypoint}; Dockerfile: {stage:#?}"
    );
    let path = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e.as_str()?.strip_prefix("PATH="))
        .unwrap();
    assert!(path.starts_with("/usr/lib/postgresql/15/bin:"), "{path}");
    assert!(
        has("ENV PATH=/usr/lib/postgresql/15/bin:$PATH"),
        "Dockerfile: {stage:#?}"
    );
    for port in config["ExposedPorts"].as_object().unwrap().keys() {
        let port = port.trim_end_matches("/tcp");
        assert!(
            has(&format!("EXPOSE {port}")),
            "image exposes {port}; Dockerfile: {stage:#?}"
        );
    }
    let uid = format!("--uid {POSTGRES_UID}");
    assert!(
        stage
            .iter()
            .any(|l| l.contains(&uid) && l.contains("useradd")),
        "the Dockerfile's postgres user must have uid {POSTGRES_UID}: {stage:#?}"
    );
    assert!(
        stage
            .iter()
            .any(|l| l.starts_with("COPY ") && l.ends_with(" /usr/local/bin/pgplane")),
        "Dockerfile: {stage:#?}"
    );
    let layer = manifest[0]["Layers"][0].as_str().unwrap();
    let listing = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("tar -xOf '{}' '{layer}' | tar -tv", tar.display()))
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" ./usr/local/bin/pgplane")),
        "no /usr/local/bin/pgplane in the image"
    );
    let passwd = String::from_utf8(tar_member_of_layer(tar, layer, "./etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("{user}:x:{POSTGRES_UID}:{POSTGRES_UID}:"))),
        "{passwd}"
    );
}

fn tar_member_of_layer(tar: &std::path::Path, layer: &str, member: &str) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -xOf '{}' '{layer}' | tar -xO '{member}'",
            tar.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{member} in {layer}");
    out.stdout
}
