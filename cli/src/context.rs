//! `pgplane status`: which control plane this shell talks to, as whom, and
//! how it is; and `pgplane completion`: shell completion scripts.

use chrono::Utc;

use crate::instance::failure::Failure;
use crate::output::{self, OutputFormat};
use crate::ApiArgs;

/// The client's own version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Context<'a> {
    endpoint: &'a str,
    client_version: &'a str,
    #[serde(flatten)]
    server: api::ServerStatus,
}

/// Prints the context; exits 1 (saying why) when the control plane cannot
/// be reached or refuses the token.
pub async fn status(conn: &ApiArgs, output: OutputFormat) -> i32 {
    let Some(client) = conn.client() else {
        return 1;
    };
    let server = match client.status().await {
        Ok(s) => s,
        Err(e) => {
            eprint!("{}", Failure::client(&conn.endpoint, e).render());
            return 1;
        }
    };
    let ctx = Context {
        endpoint: client.endpoint(),
        client_version: VERSION,
        server,
    };
    let printed = match output {
        f if f.is_data() => output::print_data(f, &ctx),
        _ => output::print_text(&render(&ctx)),
    };
    match printed {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: cannot write output: {e}");
            1
        }
    }
}

fn render(ctx: &Context) -> String {
    let now = Utc::now();
    let planes = if ctx.server.data_planes.is_empty() {
        "none registered yet (start a conductor, or `pgplane up`)".to_owned()
    } else {
        ctx.server
            .data_planes
            .iter()
            .map(|p| {
                format!(
                    "{} (seen {} ago)",
                    p.name,
                    crate::output::age(p.last_seen, now)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "endpoint:      {}\norganisation:  {}{}\nclient:        pgplane {}\nserver:        pgplane {}\ndata planes:   {}\n",
        ctx.endpoint,
        ctx.server.org,
        if ctx.server.admin { " (admin token)" } else { "" },
        ctx.client_version,
        ctx.server.version,
        planes
    )
}

/// Writes the completion script for `shell` to stdout.
pub fn completion(shell: clap_complete::Shell) -> i32 {
    let mut cmd = <crate::Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "pgplane", &mut std::io::stdout());
    0
}
