//! Connecting to an instance: its credentials in the forms tools read
//! (a URI, libpq's environment variables, a `.pgpass` line), and `psql`
//! started with them.

use std::process::Command;

use api::Credentials;

/// How `instance credentials` prints them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CredentialsFormat {
    /// `postgres://user:password@host:port/database`
    #[default]
    Uri,
    /// A URI listing every member that reaches the primary wherever it is
    /// (`target_session_attrs=read-write`).
    ReadWriteUri,
    /// A URI listing every member that prefers a standby
    /// (`target_session_attrs=prefer-standby`).
    ReadOnlyUri,
    /// `export PGHOST=…` lines for `eval` (libpq reads them).
    Env,
    /// One `host:port:database:user:password` line for `~/.pgpass`.
    Pgpass,
}

pub fn render(c: &Credentials, format: CredentialsFormat) -> String {
    match format {
        CredentialsFormat::Uri => format!("{}\n", c.uri),
        CredentialsFormat::ReadWriteUri => format!("{}\n", or_uri(&c.read_write_uri, c)),
        CredentialsFormat::ReadOnlyUri => format!("{}\n", or_uri(&c.read_only_uri, c)),
        CredentialsFormat::Env => {
            let port = c.port.to_string();
            [
                ("PGHOST", c.host.as_str()),
                ("PGPORT", port.as_str()),
                ("PGDATABASE", c.database.as_str()),
                ("PGUSER", c.user.as_str()),
                ("PGPASSWORD", c.password.as_str()),
            ]
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
            .collect()
        }
        CredentialsFormat::Pgpass => format!(
            "{}:{}:{}:{}:{}\n",
            pgpass_field(&c.host),
            c.port,
            pgpass_field(&c.database),
            pgpass_field(&c.user),
            pgpass_field(&c.password)
        ),
    }
}

/// `uri`, or the plain URI from a control plane that sends no other.
fn or_uri<'a>(uri: &'a str, c: &'a Credentials) -> &'a str {
    if uri.is_empty() {
        &c.uri
    } else {
        uri
    }
}

/// `psql` connected to the instance, with `args` after the connection.
/// The password travels in the child's environment (`PGPASSWORD`), not on
/// its command line, where every local user could read it.
pub fn psql(c: &Credentials, args: &[String]) -> Command {
    let mut cmd = Command::new("psql");
    cmd.arg(format!(
        "postgres://{}@{}:{}/{}",
        encode(&c.user),
        c.host,
        c.port,
        encode(&c.database)
    ))
    .args(args)
    .env("PGPASSWORD", &c.password);
    cmd
}

/// Single-quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A `.pgpass` field: `:` and `\` escaped with `\`.
fn pgpass_field(s: &str) -> String {
    s.replace('\\', r"\\").replace(':', r"\:")
}

/// Percent-encodes what a URI's user or path may not hold as is.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(password: &str) -> Credentials {
        Credentials {
            host: "127.0.0.1".into(),
            port: 5433,
            database: "postgres".into(),
            user: "postgres".into(),
            password: password.into(),
            uri: format!("postgres://postgres:{password}@127.0.0.1:5433/postgres"),
            read_write_uri: String::new(),
            read_only_uri: String::new(),
        }
    }

    #[test]
    fn env_lines_survive_a_shell() {
        let out = render(&creds("it's:a\\b"), CredentialsFormat::Env);
        assert!(out.contains("export PGPORT='5433'\n"), "{out}");
        assert!(out.contains(r"export PGPASSWORD='it'\''s:a\b'"), "{out}");
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{out}printf %s \"$PGPASSWORD\""))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "it's:a\\b");
    }

    #[test]
    fn pgpass_escapes_its_separators() {
        assert_eq!(
            render(&creds(r"a:b\c"), CredentialsFormat::Pgpass),
            "127.0.0.1:5433:postgres:postgres:a\\:b\\\\c\n"
        );
    }

    #[test]
    fn psql_gets_the_password_in_its_environment_only() {
        let cmd = psql(&creds("s3cret"), &["-c".into(), "select 1".into()]);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "postgres://postgres@127.0.0.1:5433/postgres",
                "-c",
                "select 1"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("s3cret")));
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "PGPASSWORD" && v.is_some_and(|v| v == "s3cret")));
    }
}
