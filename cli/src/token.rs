//! `pgplane token`: API tokens, through the API with an admin token (create
//! with a name and an expiry, list, revoke), or directly in the control
//! plane's database to bootstrap the first one.

use std::time::Duration;

use chrono::Utc;

use crate::instance::failure::Failure;
use crate::instance::wait::parse_duration;
use crate::output::{self, OutputFormat, Table};
use crate::ApiArgs;

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for an organisation and print it (shown once).
    ///
    /// Through the API with an admin token (PGPLANE_ENDPOINT and
    /// PGPLANE_TOKEN, as `pgplane up` writes them), or with --database-url
    /// straight into the control plane's database (the first token).
    ///
    /// Examples:
    ///
    ///   pgplane token create --org acme --name ci --expires-in 30d
    ///
    ///   pgplane token create --org acme --admin --database-url postgres://pgplane@db.internal/pgplane
    Create {
        /// The organisation (created if new).
        #[arg(long)]
        org: String,
        /// May create, list and revoke tokens, for any organisation.
        #[arg(long)]
        admin: bool,
        /// A name, unique within the organisation; the history names the
        /// token's changes `token:NAME`.
        #[arg(long)]
        name: Option<String>,
        /// What the token is for.
        #[arg(long)]
        description: Option<String>,
        /// Refuse the token after this long, e.g. `12h`, `30d`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<Duration>,
        /// Write to this control-plane database instead of calling the API.
        #[arg(long, env = "PGPLANE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// List every token (admin token): never the tokens themselves.
    ///
    /// Example:
    ///
    ///   pgplane token list
    List,
    /// Revoke a token (admin token) by its id, or by its name within --org
    /// (default: your token's organisation). Its console sessions end too.
    ///
    /// Examples:
    ///
    ///   pgplane token revoke ci --org acme
    ///
    ///   pgplane token revoke 0b6f4a52-7d2e-4c1a-9a3e-5f8d2c1b9e07
    Revoke {
        /// The token's id or name.
        #[arg(value_name = "ID_OR_NAME")]
        which: String,
        #[arg(long)]
        org: Option<String>,
    },
}

pub async fn run(command: TokenCommand, conn: &ApiArgs, output: OutputFormat) -> i32 {
    match execute(command, conn, output).await {
        Ok(()) => 0,
        Err(failure) => {
            eprint!("{}", failure.render());
            failure.exit_code()
        }
    }
}

async fn execute(
    command: TokenCommand,
    conn: &ApiArgs,
    output: OutputFormat,
) -> Result<(), Failure> {
    match command {
        TokenCommand::Create {
            org,
            admin,
            name,
            description,
            expires_in,
            database_url,
        } => {
            let expires_at = match expires_in {
                Some(d) => Some(
                    Utc::now()
                        + chrono::Duration::from_std(d).map_err(|_| Failure::Tool {
                            what: format!("--expires-in {d:?} is too long"),
                        })?,
                ),
                None => None,
            };
            if let Some(url) = database_url {
                let new = reconciler::auth::NewToken {
                    org: &org,
                    admin,
                    description: description.as_deref(),
                    name: name.as_deref(),
                    expires_at,
                };
                let token = in_database(&url, &new).await.map_err(|e| Failure::Tool {
                    what: format!("creating the token in the database: {e:#}"),
                })?;
                return print_token(&org, &token, output);
            }
            let client = api_client(conn)?;
            let req = api::CreateToken {
                org: org.clone(),
                admin,
                description,
                name,
                expires_at,
            };
            let created = client
                .create_token(&req)
                .await
                .map_err(|e| Failure::client(&org, e))?;
            match output {
                f if f.is_data() => output::print_data(f, &created)?,
                _ => output::print_text(&format!("{}\n", created.token))?,
            }
            Ok(())
        }
        TokenCommand::List => {
            let client = api_client(conn)?;
            let list = client
                .list_tokens()
                .await
                .map_err(|e| Failure::client("tokens", e))?;
            match output {
                f if f.is_data() => output::print_data(f, &list)?,
                _ => output::print_text(&render(&list))?,
            }
            Ok(())
        }
        TokenCommand::Revoke { which, org } => {
            let client = api_client(conn)?;
            let revoked = client
                .revoke_token(&which, org.as_deref())
                .await
                .map_err(|e| Failure::client(&which, e))?;
            match output {
                f if f.is_data() => output::print_data(f, &revoked)?,
                _ => output::print_text(&format!(
                    "revoked {} ({})\n",
                    revoked.name.as_deref().unwrap_or("unnamed token"),
                    revoked.id
                ))?,
            }
            Ok(())
        }
    }
}

fn api_client(conn: &ApiArgs) -> Result<api::Client, Failure> {
    conn.client().ok_or_else(|| Failure::Tool {
        what: "an admin token is needed (or --database-url for `token create`)".to_owned(),
    })
}

async fn in_database(url: &str, new: &reconciler::auth::NewToken<'_>) -> anyhow::Result<String> {
    let pool = reconciler::connect(url).await?;
    reconciler::prepare_database(&pool, "local").await?;
    let mut conn = pool.acquire().await?;
    Ok(reconciler::auth::create_named_token(&mut conn, new)
        .await?
        .1)
}

fn print_token(org: &str, token: &str, output: OutputFormat) -> Result<(), Failure> {
    match output {
        f if f.is_data() => {
            output::print_data(f, &serde_json::json!({ "org": org, "token": token }))?
        }
        _ => output::print_text(&format!("{token}\n"))?,
    }
    Ok(())
}

fn render(list: &api::TokenList) -> String {
    let now = Utc::now();
    let mut t = Table::new([
        "ORG",
        "NAME",
        "ID",
        "ADMIN",
        "CREATED",
        "EXPIRES",
        "DESCRIPTION",
    ]);
    for tok in &list.items {
        t.row(vec![
            tok.org.clone(),
            tok.name.clone().unwrap_or_else(|| "-".to_owned()),
            tok.id.to_string(),
            if tok.admin { "yes" } else { "no" }.to_owned(),
            format!("{} ago", output::age(tok.created_at, now)),
            match tok.expires_at {
                None => "never".to_owned(),
                Some(_) if tok.expired => "expired".to_owned(),
                Some(at) => format!("in {}", output::age(now, at)),
            },
            tok.description.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}
