//! Code generated at build time from `proto/` (see build.rs).

#![allow(clippy::all, missing_docs)]

/// Terraform's plugin protocol, version 6 (`proto/tfplugin6.proto`).
pub mod tfplugin6 {
    tonic::include_proto!("tfplugin6");
}

/// go-plugin's controller service (`proto/grpc_controller.proto`).
pub mod plugin {
    tonic::include_proto!("plugin");
}
