//! Secrets at rest: instance and role passwords, webhook secrets and
//! shipped server logs are stored as
//! sealed boxes (libsodium's `crypto_box_seal`: X25519 and
//! XSalsa20-Poly1305) to a public key of the control plane's.
//!
//! - The control plane holds the private keys in a [`Keyring`], kept outside
//!   the database (a file, mode 0600, or an environment variable), and
//!   publishes the current public key in `sealing_keys`.
//! - A data plane seals with the published key ([`SealingKey`]) and can
//!   never read what it sealed, nor anything else in the store.
//! - A stored value is `sealed:v1:<key id>:<base64>`; the key id tells which
//!   private key opens it, so keys can be rotated ([`rotate`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use crate::{sql, Error, Result};

const PREFIX: &str = "sealed:v1:";

/// A public key to seal with, as published by the control plane.
#[derive(Clone)]
pub struct SealingKey {
    id: String,
    public: PublicKey,
}

/// The control plane's private keys; the first is the current one. A
/// keyring read from a file follows the file: after `pgplane secrets
/// rotate` rewrote it, the next seal or open uses what it holds.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<RwLock<Vec<(String, SecretKey)>>>,
    file: Option<Arc<KeyFile>>,
}

/// A key file and the modification time of the keys last read from it.
struct KeyFile {
    path: PathBuf,
    read: Mutex<Option<SystemTime>>,
}

fn key_id(public: &PublicKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Sealing(message.into())
}

impl SealingKey {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `plaintext` sealed to this key, as stored.
    pub fn seal(&self, plaintext: &str) -> String {
        let sealed = self
            .public
            .seal(&mut OsRng, plaintext.as_bytes())
            .expect("sealing never fails for in-memory data");
        format!("{PREFIX}{}:{}", self.id, B64.encode(sealed))
    }

    /// The key to seal a new value of `store` with: the published current
    /// key, read after `store`'s table is locked against a concurrent
    /// [`rotate`] (which takes a conflicting lock before it re-seals), so a
    /// value written in `conn`'s transaction is either re-sealed by the
    /// rotation or sealed with the key it published — never left sealed to
    /// a retired key. `conn` must be in a transaction.
    pub async fn for_writing(conn: &mut PgConnection, store: Store) -> Result<SealingKey> {
        sqlx::query(&format!(
            "lock table {} in row exclusive mode",
            store.table()
        ))
        .execute(&mut *conn)
        .await
        .map_err(sql("lock a secret store"))?;
        let row: Option<(String, Vec<u8>)> =
            sqlx::query_as("select id, public_key from sealing_keys where current")
                .fetch_optional(&mut *conn)
                .await
                .map_err(sql("read the sealing key"))?;
        let (id, bytes) = row.ok_or_else(|| {
            invalid("no sealing key is published yet (the control plane has not started)")
        })?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid(format!("sealing key {id} is not 32 bytes")))?;
        Ok(SealingKey {
            id,
            public: PublicKey::from_bytes(bytes),
        })
    }
}

/// Whether a stored value is sealed (values written before sealing existed
/// are plain text until [`seal_plaintext`] or [`rotate`] seals them).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

impl Keyring {
    /// A keyring with one new key.
    pub fn generate() -> Keyring {
        Keyring::from_keys(vec![SecretKey::generate(&mut OsRng)], None)
    }

    fn from_keys(keys: Vec<SecretKey>, file: Option<PathBuf>) -> Keyring {
        Keyring {
            keys: Arc::new(RwLock::new(
                keys.into_iter()
                    .map(|k| (key_id(&k.public_key()), k))
                    .collect(),
            )),
            file: file.map(|path| {
                let read = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                Arc::new(KeyFile {
                    path,
                    read: Mutex::new(read),
                })
            }),
        }
    }

    fn keys(&self) -> Vec<(String, SecretKey)> {
        self.refresh();
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the key file when it changed since it was read.
    fn refresh(&self) {
        let Some(file) = &self.file else { return };
        let modified = std::fs::metadata(&file.path)
            .and_then(|m| m.modified())
            .ok();
        let mut read = file.read.lock().unwrap_or_else(|e| e.into_inner());
        if modified.is_none() || modified == *read {
            return;
        }
        match std::fs::read_to_string(&file.path)
            .map_err(|e| invalid(e.to_string()))
            .and_then(|text| Keyring::parse(&text))
        {
            Ok(fresh) => {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = fresh.keys();
                *read = modified;
                tracing::info!(file = %file.path.display(), "sealing keys re-read");
            }
            Err(e) => {
                tracing::warn!(file = %file.path.display(), error = %e, "sealing keys not re-read")
            }
        }
    }

    /// Parses keys written by [`Keyring::to_text`]: one base64 key per line,
    /// the current one first; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Keyring> {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, line)| {
                let bytes: [u8; 32] = B64
                    .decode(line)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| invalid(format!("key {} is not 32 bytes of base64", i + 1)))?;
                Ok(SecretKey::from_bytes(bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        if keys.is_empty() {
            return Err(invalid("no key found"));
        }
        Ok(Keyring::from_keys(keys, None))
    }

    /// The keys as text for a key file or an environment variable.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# pgplane sealing keys (base64), the current one first. Keep this file secret.\n",
        );
        for (_, k) in &self.keys() {
            out.push_str(&B64.encode(k.to_bytes()));
            out.push('\n');
        }
        out
    }

    /// Reads a key file; refuses one that others than its owner may read.
    pub fn load(path: &Path) -> Result<Keyring> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| invalid(format!("reading {}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(invalid(format!(
                "{} may be read by others (mode {:o}): `chmod 600` it",
                path.display(),
                mode & 0o777
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
        let ring =
            Keyring::parse(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        Ok(Keyring::from_keys(
            ring.keys().into_iter().map(|(_, k)| k).collect(),
            Some(path.to_path_buf()),
        ))
    }

    /// Reads a key file, creating it (mode 0600) with a new key if missing.
    pub fn load_or_create(path: &Path) -> Result<Keyring> {
        if !path.exists() {
            Keyring::generate().save(path)?;
        }
        Keyring::load(path)
    }

    /// Writes the key file atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.to_text().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| invalid(format!("writing {}: {e}", path.display())))
    }

    /// The key new values are sealed with.
    pub fn current(&self) -> SealingKey {
        let (id, key) = self.keys().swap_remove(0);
        SealingKey {
            public: key.public_key(),
            id,
        }
    }

    pub fn seal(&self, plaintext: &str) -> String {
        self.current().seal(plaintext)
    }

    /// The plaintext of a stored value (plain text as it is, for values
    /// stored before sealing).
    pub fn open(&self, stored: &str) -> Result<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, body) = rest
            .split_once(':')
            .ok_or_else(|| invalid("a sealed value without its key id"))?;
        let key = self
            .keys()
            .into_iter()
            .find(|(k, _)| k == id)
            .map(|(_, k)| k)
            .ok_or_else(|| invalid(format!("no key {id} in the keyring")))?;
        let sealed = B64
            .decode(body)
            .map_err(|_| invalid(format!("a value sealed with key {id} is not base64")))?;
        let plain = key
            .unseal(&sealed)
            .map_err(|_| invalid(format!("a value sealed with key {id} does not open")))?;
        String::from_utf8(plain).map_err(|_| invalid("a sealed value is not UTF-8"))
    }

    /// Makes the current key the one data planes seal with.
    pub async fn publish(&self, pool: &PgPool) -> Result<()> {
        let mut tx = pool.begin().await.map_err(sql("publish the sealing key"))?;
        publish_in(&mut tx, &self.current()).await?;
        tx.commit().await.map_err(sql("publish the sealing key"))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.keys().into_iter().map(|(id, _)| id).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

async fn publish_in(conn: &mut PgConnection, key: &SealingKey) -> Result<()> {
    sqlx::query("update sealing_keys set current = false where current and id <> $1")
        .bind(&key.id)
        .execute(&mut *conn)
        .await
        .map_err(sql("publish the sealing key"))?;
    sqlx::query(
        "insert into sealing_keys (id, public_key, current) values ($1, $2, true)
         on conflict (id) do update set current = true",
    )
    .bind(&key.id)
    .bind(key.public.as_bytes().as_slice())
    .execute(&mut *conn)
    .await
    .map_err(sql("publish the sealing key"))?;
    Ok(())
}

/// A table that holds sealed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    InstancePasswords,
    RolePasswords,
    WebhookSecrets,
    LogChunks,
}

impl Store {
    pub const ALL: [Store; 4] = [
        Store::InstancePasswords,
        Store::RolePasswords,
        Store::WebhookSecrets,
        Store::LogChunks,
    ];

    fn table(self) -> &'static str {
        match self {
            Store::InstancePasswords => "instance_secrets",
            Store::RolePasswords => "role_secrets",
            Store::WebhookSecrets => "sources",
            Store::LogChunks => "instance_logs",
        }
    }

    /// An expression naming a row uniquely.
    fn key(self) -> &'static str {
        match self {
            Store::InstancePasswords => "instance_id::text",
            Store::RolePasswords => "instance_id::text || '/' || role",
            Store::WebhookSecrets => "org || '/' || name",
            Store::LogChunks => "id::text",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Store::InstancePasswords | Store::RolePasswords => "password",
            Store::WebhookSecrets => "webhook_secret",
            Store::LogChunks => "chunk",
        }
    }

    /// What one value is, in words.
    pub fn label(self) -> &'static str {
        match self {
            Store::InstancePasswords => "instance password",
            Store::RolePasswords => "role password",
            Store::WebhookSecrets => "webhook secret",
            Store::LogChunks => "log chunk",
        }
    }
}

/// How many values of each store were re-sealed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resealed(pub Vec<(Store, usize)>);

impl Resealed {
    pub fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for Resealed {
    /// `3 secret(s) (1 instance password, 2 log chunks)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} secret(s)", self.total())?;
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(store, n)| {
                let plural = if *n == 1 { "" } else { "s" };
                format!("{n} {}{plural}", store.label())
            })
            .collect();
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Re-seals every stored secret with `ring`'s current key (opening each
/// with whichever key of `ring` sealed it), in one transaction, and
/// publishes that key. Returns how many values were re-sealed.
pub async fn rotate(pool: &PgPool, ring: &Keyring) -> Result<Resealed> {
    reseal(pool, ring, |_| true).await
}

/// Seals the values still stored in plain text. Returns how many.
pub async fn seal_plaintext(pool: &PgPool, ring: &Keyring) -> Result<Resealed> {
    reseal(pool, ring, |v| !is_sealed(v)).await
}

async fn reseal(pool: &PgPool, ring: &Keyring, wanted: impl Fn(&str) -> bool) -> Result<Resealed> {
    let mut tx = pool.begin().await.map_err(sql("re-seal secrets"))?;
    // Conflicts with the lock a writer takes in `SealingKey::for_writing`:
    // writers that read the old key commit before this reads their rows,
    // and later ones read the key published here.
    let tables: Vec<&str> = Store::ALL.iter().map(|s| s.table()).collect();
    sqlx::query(&format!("lock table {} in share mode", tables.join(", ")))
        .execute(&mut *tx)
        .await
        .map_err(sql("lock the secret stores"))?;
    publish_in(&mut tx, &ring.current()).await?;
    let mut counts = Resealed::default();
    for store in Store::ALL {
        let (key, column, table) = (store.key(), store.column(), store.table());
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "select {key}, {column} from {table} where {column} is not null"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(sql("read secrets to re-seal"))?;
        let mut n = 0;
        for (id, stored) in rows.into_iter().filter(|(_, v)| wanted(v)) {
            let resealed = ring.seal(&ring.open(&stored)?);
            sqlx::query(&format!(
                "update {table} set {column} = $2 where {key} = $1"
            ))
            .bind(&id)
            .bind(resealed)
            .execute(&mut *tx)
            .await
            .map_err(sql("re-seal a secret"))?;
            n += 1;
        }
        counts.0.push((store, n));
    }
    sqlx::query("delete from sealing_keys where not current")
        .execute(&mut *tx)
        .await
        .map_err(sql("retire old sealing keys"))?;
    tx.commit().await.map_err(sql("re-seal secrets"))?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let ring = Keyring::generate();
        let stored = ring.seal("hunter2");
        assert!(is_sealed(&stored));
        assert!(!stored.contains("hunter2"));
        assert_ne!(stored, ring.seal("hunter2"), "every seal is fresh");
        assert_eq!(ring.open(&stored).unwrap(), "hunter2");
        let other = Keyring::generate();
        assert!(other.open(&stored).is_err());
        let mut tampered = stored.clone();
        tampered.pop();
        tampered.push(if stored.ends_with('A') { 'B' } else { 'A' });
        assert!(ring.open(&tampered).is_err());
        assert_eq!(ring.open("legacy plain").unwrap(), "legacy plain");
    }

    #[test]
    fn keys_round_trip_through_text_and_files() {
        let ring = Keyring::generate();
        let again = Keyring::parse(&ring.to_text()).unwrap();
        assert_eq!(again.current().id(), ring.current().id());
        assert!(Keyring::parse("# nothing\n").is_err());
        assert!(Keyring::parse("not base64\n").is_err());
        assert!(!format!("{ring:?}").contains(&ring.to_text()[90..]));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgplane.key");
        let created = Keyring::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Keyring::load_or_create(&path).unwrap();
        assert_eq!(loaded.current().id(), created.current().id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keyring::load(&path).unwrap_err().to_string();
        assert!(err.contains("may be read by others (mode 644)"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

        // Another process rotates the file: values sealed with the new key
        // still open here.
        let rotated = Keyring::generate();
        rotated.save(&path).unwrap();
        assert_eq!(loaded.open(&rotated.seal("x")).unwrap(), "x");
    }
}
