//! The Terraform provider for pgplane, speaking Terraform's plugin protocol 6
//! (tfplugin6) natively over gRPC.
//!
//! - [`plugin`]: go-plugin's side of the conversation: the handshake line on
//!   stdout, the Unix socket, AutoMTLS ([`tls`]), the controller and health
//!   services, shutdown.
//! - [`server`]: the `tfplugin6.Provider` service: decodes requests, calls
//!   the resource and data sources, encodes responses.
//! - [`value`]: Terraform values (cty) on the wire: msgpack with unknowns, JSON state.
//! - [`schema`]: the provider, resource and data source schemas.
//! - [`instance`]: the `pgplane_instance` resource: plan, apply, read, import.
//! - [`data_sources`]: `pgplane_instance` and `pgplane_instances`.
//! - [`hclog`]: logs on stderr in the JSON form go-plugin understands.

pub mod config;
pub mod data_sources;
pub mod diag;
pub mod hclog;
pub mod instance;
pub mod plugin;
pub mod schema;
pub mod server;
pub mod tfplugin;
pub mod tls;
pub mod value;

pub use config::Config;

/// Serves the provider until Terraform shuts it down.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(plugin::serve(config))
}
