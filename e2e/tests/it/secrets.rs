//! Secrets at rest: the state database holds instance passwords and webhook
//! secrets only sealed, with a key kept beside it (`pgplane.key`, 0600);
//! `pgplane secrets rotate` re-seals everything while `pgplane up` runs.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

#[test]
fn secrets_are_sealed_at_rest_and_rotate_while_running() {
    let up = Embedded::start();
    let env = up.env();
    let data_dir = &up.data_dir;
    let log = &up.log;
    let key_file = data_dir.join("pgplane.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    ok(&["instance", "create", "orders", "--wait"], &env);
    let uri = ok(&["instance", "credentials", "orders"], &env)
        .trim()
        .to_owned();
    let password = password_of(&uri);
    let repo = up.path("repo.git");
    assert!(Command::new("git")
        .args(["init", "-q", "--bare", repo.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let added = ok(
        &[
            "source",
            "add",
            "prod",
            "--git",
            &format!("file://{}", repo.display()),
            "--branch",
            "main",
            // An empty repository: no branch to check yet.
            "--no-verify",
        ],
        &env,
    );

    let state_url = up.state_url();
    let at_rest = psql(&state_url, "select password from instance_secrets");
    assert!(at_rest.starts_with("sealed:v1:"), "{at_rest}");
    assert!(!at_rest.contains(&password));
    let webhook = psql(&state_url, "select webhook_secret from sources");
    assert!(webhook.starts_with("sealed:v1:"), "{webhook}");
    assert!(
        !added.contains(&webhook) && !std::fs::read_to_string(log).unwrap().contains(&password),
        "neither the log nor the output holds a secret as stored or in clear"
    );
    let key_id = |v: &str| v.split(':').nth(2).unwrap().to_owned();
    let old = key_id(&at_rest);
    assert_eq!(key_id(&webhook), old);

    let out = run(
        &[
            "secrets",
            "rotate",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The server's log chunks shipped so far are re-sealed too; how many
    // there are depends on when the conductor last observed.
    let said = stderr(&out);
    assert!(
        said.contains("1 instance password") && said.contains("1 webhook secret"),
        "{said}"
    );
    let at_rest = psql(&state_url, "select password from instance_secrets");
    let webhook = psql(&state_url, "select webhook_secret from sources");
    let new = key_id(&at_rest);
    assert_ne!(new, old);
    assert_eq!(key_id(&webhook), new);
    assert_eq!(
        psql(&state_url, "select string_agg(id, ',') from sealing_keys"),
        new,
        "only the new key is published"
    );
    let keys = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(
        keys.lines().filter(|l| !l.starts_with('#')).count(),
        1,
        "the old key is gone from the file"
    );

    // The running control plane follows the key file.
    assert_eq!(
        ok(&["instance", "credentials", "orders"], &env).trim(),
        uri,
        "the same credentials after the rotation"
    );
    assert_eq!(psql(&uri, "select 1"), "1");
    ok(&["instance", "create", "second", "--wait"], &env);
    let second = psql(
        &state_url,
        "select s.password from instance_secrets s join instances i on i.id = s.instance_id \
         where i.name = 'second'",
    );
    assert_eq!(key_id(&second), new, "new secrets use the new key");
    // However many log chunks were shipped by now (the conductor ships on
    // its own schedule), each is sealed to the new key.
    let chunks = psql(&state_url, "select chunk from instance_logs");
    let keys: Vec<String> = chunks.lines().map(key_id).collect();
    assert!(
        keys.iter().all(|k| *k == new),
        "every shipped log chunk is sealed to the new key {new}: {keys:?}"
    );
    ok(&["instance", "logs", "orders"], &env);
}
