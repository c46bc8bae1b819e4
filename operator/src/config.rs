//! The operator's configuration: one clap-derived struct, parsed in `main`.

use clap::Parser;

/// pgplane's Kubernetes operator for `PostgresInstance` resources.
#[derive(Debug, Clone, Parser)]
#[command(name = "pgplane-operator", version)]
pub struct Config {
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "PGPLANE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image of the instance pod (the instance agent in front of postgres).
    #[arg(long, env = "PGPLANE_INSTANCE_IMAGE", default_value = Settings::DEFAULT_IMAGE)]
    pub instance_image: String,
    /// Address of the admin endpoint (/health, /ready, /metrics).
    #[arg(long, env = "PGPLANE_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: String,
}

/// What the reconciler needs, as a plain struct (tests build it directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub namespace: Option<String>,
    pub instance_image: String,
}

impl Settings {
    pub const DEFAULT_IMAGE: &'static str = "pgplane/instance:15";
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            instance_image: Self::DEFAULT_IMAGE.to_owned(),
        }
    }
}

impl Config {
    pub fn settings(&self) -> Settings {
        Settings {
            namespace: self.namespace.clone(),
            instance_image: self.instance_image.clone(),
        }
    }
}
