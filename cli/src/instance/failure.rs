//! Why an instance command failed, and how that reads on stderr.

use std::error::Error as _;
use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use api::ClientError;
use domain::State;

use super::spec::FlagError;
use crate::output;

/// The exit status of a wait that timed out.
pub const EXIT_TIMED_OUT: i32 = 3;

#[derive(Debug)]
pub enum Failure {
    /// The flags contradict each other or the current spec.
    Flags(FlagError),
    /// The control plane refused the request or could not be reached.
    Client {
        error: ClientError,
        hint: Option<String>,
    },
    /// The control plane says the instance is deleted (409 `deleted`), or it
    /// was deleted while waiting.
    Deleted { name: String },
    /// The data plane reported a failure while waiting.
    InstanceFailed { name: String, error: String },
    /// `instance status` found something that needs attention.
    Unhealthy { name: String, problems: Vec<String> },
    /// `--timeout` passed before the instance settled.
    TimedOut {
        name: String,
        after: Duration,
        state: State,
        generation: i64,
        observed_generation: i64,
        /// The last transient error while polling, if polling was failing.
        last_error: Option<String>,
    },
    /// Writing the result to stdout failed.
    Output(io::Error),
    /// A tool pgplane runs (psql) could not be started.
    Tool { what: String },
}

impl Failure {
    /// A client error about instance `name`, with a hint where one helps.
    pub fn client(name: &str, error: ClientError) -> Failure {
        match &error {
            ClientError::Api { code, .. } if *code == api::ErrorCode::Deleted => Failure::Deleted {
                name: name.to_owned(),
            },
            ClientError::Unreachable { .. } => Failure::Client {
                error,
                hint: Some(
                    "check PGPLANE_ENDPOINT, or start a local control plane with `pgplane up`"
                        .to_owned(),
                ),
            },
            ClientError::NotPgplane { .. } | ClientError::InvalidEndpoint { .. } => {
                Failure::Client {
                    error,
                    hint: Some(ENDPOINT_HINT.to_owned()),
                }
            }
            ClientError::Api { .. } | ClientError::Protocol { .. } => {
                Failure::Client { error, hint: None }
            }
        }
    }

    /// The process's exit status: 3 when a wait timed out (the instance
    /// may still get there), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::TimedOut { .. } => EXIT_TIMED_OUT,
            _ => 1,
        }
    }

    /// What stderr shows: `error: …` first, then details and hints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self {
            Failure::Flags(e) => line(&mut out, format_args!("error: {e}")),
            Failure::Client { error, hint } => {
                out.push_str(&client_error(error));
                if let Some(cause) = root_cause(error) {
                    line(&mut out, format_args!("  caused by: {cause}"));
                }
                if let Some(hint) = hint {
                    line(&mut out, format_args!("hint: {hint}"));
                }
            }
            Failure::Deleted { name } => {
                line(&mut out, format_args!("error: instance {name} is deleted"))
            }
            Failure::InstanceFailed { name, error } => line(
                &mut out,
                format_args!("error: instance {name} failed: {error}"),
            ),
            Failure::Unhealthy { name, problems } => {
                line(
                    &mut out,
                    format_args!("error: instance {name} needs attention"),
                );
                for p in problems {
                    line(&mut out, format_args!("  {p}"));
                }
            }
            Failure::TimedOut {
                name,
                after,
                state,
                generation,
                observed_generation,
                last_error,
            } => {
                line(
                    &mut out,
                    format_args!(
                        "error: timed out after {} waiting for instance {name}; \
                         last state {state} (generation {generation}, observed {observed_generation})",
                        output::duration(*after)
                    ),
                );
                if let Some(e) = last_error {
                    line(&mut out, format_args!("  last error: {e}"));
                }
                line(
                    &mut out,
                    format_args!(
                        "hint: the command was accepted and is still in progress; \
                         follow it with `pgplane instance get {name}`"
                    ),
                );
            }
            Failure::Output(e) => line(&mut out, format_args!("error: cannot write output: {e}")),
            Failure::Tool { what } => line(&mut out, format_args!("error: {what}")),
        }
        out
    }
}

impl From<FlagError> for Failure {
    fn from(e: FlagError) -> Self {
        Failure::Flags(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

/// Where the endpoint comes from and what it looks like.
const ENDPOINT_HINT: &str = "PGPLANE_ENDPOINT (or --endpoint) should be the endpoint `pgplane up` \
     printed, e.g. http://127.0.0.1:8080";

/// `error: …` and, for a refused request, one line per field. The
/// control plane's message already lists the fields (`invalid request: PATH:
/// MESSAGE; …`); then it is shortened to its headline, so each field reads once.
pub(crate) fn client_error(error: &ClientError) -> String {
    let mut out = String::new();
    match error {
        ClientError::Api {
            message, fields, ..
        } if !fields.is_empty() => {
            let listed = fields
                .iter()
                .map(|f| format!("{}: {}", f.path, f.message))
                .collect::<Vec<_>>()
                .join("; ");
            let headline = message
                .strip_suffix(&listed)
                .map(|h| h.trim_end_matches([':', ' ']))
                .filter(|h| !h.is_empty());
            line(
                &mut out,
                format_args!("error: {}", headline.unwrap_or(message)),
            );
            for f in fields {
                let text = format!("{}: {}", f.path, f.message);
                if headline.is_some() || !message.contains(&text) {
                    line(&mut out, format_args!("  {text}"));
                }
            }
        }
        _ => line(&mut out, format_args!("error: {error}")),
    }
    out
}

fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    let _ = out.write_fmt(args);
    out.push('\n');
}

/// The root cause below the error's own source (which its message already
/// includes), e.g. "Connection refused": often all a user needs, and buried
/// under layers of "error sending request".
fn root_cause(error: &ClientError) -> Option<String> {
    let mut cause = error.source()?.source()?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    (!error.to_string().contains(&text)).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::FieldError;

    fn api(status: u16, code: &str, message: &str, fields: Vec<FieldError>) -> ClientError {
        ClientError::Api {
            status,
            code: code.into(),
            message: message.into(),
            fields,
        }
    }

    #[test]
    fn validation_errors_list_each_field() {
        let err = api(
            422,
            "invalid",
            "invalid request: spec.config.port: managed by pgplane; spec.storage: expected a byte quantity",
            vec![
                FieldError {
                    path: "spec.config.port".into(),
                    message: "managed by pgplane".into(),
                },
                FieldError {
                    path: "spec.storage".into(),
                    message: "expected a byte quantity".into(),
                },
            ],
        );
        assert_eq!(
            Failure::client("orders", err).render(),
            "error: invalid request\n\
             \x20 spec.config.port: managed by pgplane\n\
             \x20 spec.storage: expected a byte quantity\n"
        );
    }

    #[test]
    fn a_message_that_is_not_the_field_list_is_kept() {
        let err = api(
            422,
            "invalid",
            "spec.storage: expected a byte quantity",
            vec![FieldError {
                path: "spec.storage".into(),
                message: "expected a byte quantity".into(),
            }],
        );
        assert_eq!(
            Failure::client("orders", err).render(),
            "error: spec.storage: expected a byte quantity\n"
        );
    }

    #[test]
    fn deleted_names_the_instance() {
        let err = api(409, "deleted", "instance \"orders\" is deleted", vec![]);
        assert_eq!(
            Failure::client("orders", err).render(),
            "error: instance orders is deleted\n"
        );
    }

    #[test]
    fn other_conflicts_keep_the_servers_message() {
        let err = api(
            409,
            "illegal_transition",
            "cannot Restart an instance that is Stopped: instance is stopped; start it instead",
            vec![],
        );
        assert_eq!(
            Failure::client("orders", err).render(),
            "error: cannot Restart an instance that is Stopped: instance is stopped; start it instead\n"
        );
    }

    #[test]
    fn timeouts_say_the_last_state() {
        let f = Failure::TimedOut {
            name: "orders".into(),
            after: Duration::from_secs(90),
            state: State::Configuring,
            generation: 2,
            observed_generation: 1,
            last_error: None,
        };
        let text = f.render();
        assert!(
            text.starts_with(
                "error: timed out after 1m30s waiting for instance orders; \
                 last state Configuring (generation 2, observed 1)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn instance_failures_carry_the_reason() {
        let f = Failure::InstanceFailed {
            name: "orders".into(),
            error: "initdb failed".into(),
        };
        assert_eq!(f.render(), "error: instance orders failed: initdb failed\n");
    }

    #[tokio::test]
    async fn an_unreachable_control_plane_names_the_endpoint_and_hints() {
        // Port 1 on loopback: nothing listens, the connection is refused locally.
        let client = api::Client::new("http://127.0.0.1:1", "token");
        let err = client.get_instance("orders").await.unwrap_err();
        let text = Failure::client("orders", err).render();
        assert!(
            text.starts_with("error: cannot reach the pgplane control plane at http://127.0.0.1:1"),
            "{text}"
        );
        assert!(text.contains("PGPLANE_ENDPOINT"), "{text}");
        assert!(text.contains("pgplane up"), "{text}");
    }
}
