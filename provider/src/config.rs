//! Everything the provider reads from its environment, parsed once in `main`.

/// Terraform starts the provider with these variables set; nobody else
/// should start it.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "terraform-provider-pgplane",
    version,
    about = "The Terraform provider for pgplane. Terraform starts it; it is not run by hand.",
    long_about = None
)]
pub struct Config {
    /// go-plugin's magic cookie; proves the process was started by Terraform.
    #[arg(long, env = "TF_PLUGIN_MAGIC_COOKIE", hide_env_values = true)]
    pub magic_cookie: Option<String>,
    /// Plugin protocol versions the client speaks, e.g. `5,6`.
    #[arg(long, env = "PLUGIN_PROTOCOL_VERSIONS")]
    pub protocol_versions: Option<String>,
    /// The client's certificate (PEM) for AutoMTLS; plaintext when absent.
    #[arg(long, env = "PLUGIN_CLIENT_CERT", hide_env_values = true)]
    pub client_cert: Option<String>,
    /// Set by Terraform when plugin TLS is disabled.
    #[arg(long, env = "TF_DISABLE_PLUGIN_TLS")]
    pub disable_tls: Option<String>,
    /// Where to create the plugin's Unix socket (default: the temp directory).
    #[arg(long, env = "PLUGIN_UNIX_SOCKET_DIR")]
    pub unix_socket_dir: Option<std::path::PathBuf>,
    /// Log level for the provider (trace, debug, info, warn, error, off).
    #[arg(long, env = "TF_LOG_PROVIDER")]
    pub log_provider: Option<String>,
    /// Terraform's own log level; used when TF_LOG_PROVIDER is not set.
    #[arg(long, env = "TF_LOG")]
    pub log: Option<String>,
    /// Default control-plane endpoint when the provider block sets none.
    #[arg(long, env = "PGPLANE_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Default API token when the provider block sets none.
    #[arg(long, env = "PGPLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The value of `TF_PLUGIN_MAGIC_COOKIE` Terraform sets for its providers.
pub const MAGIC_COOKIE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

impl Config {
    /// The level for [`crate::hclog`]: TF_LOG_PROVIDER, else TF_LOG, else `warn`.
    pub fn log_level(&self) -> String {
        let level = self
            .log_provider
            .as_deref()
            .or(self.log.as_deref())
            .filter(|l| !l.is_empty())
            .unwrap_or("warn")
            .to_ascii_lowercase();
        match level.as_str() {
            "trace" | "debug" | "info" | "warn" | "error" | "off" => level,
            "json" => "trace".to_owned(),
            _ => "warn".to_owned(),
        }
    }

    /// Whether to speak TLS: AutoMTLS is on when Terraform passed its client
    /// certificate and did not disable plugin TLS.
    pub fn tls_client_cert(&self) -> Option<&str> {
        let disabled = self.disable_tls.as_deref().is_some_and(|v| !v.is_empty());
        self.client_cert
            .as_deref()
            .filter(|c| !c.trim().is_empty() && !disabled)
    }

    /// Provider defaults taken from the environment.
    pub fn defaults(&self) -> crate::server::ProviderDefaults {
        crate::server::ProviderDefaults {
            endpoint: self.endpoint.clone().filter(|s| !s.is_empty()),
            token: self.token.clone().filter(|s| !s.is_empty()),
        }
    }
}
