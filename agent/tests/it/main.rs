//! Integration tests of the agent against real Postgres servers.

mod config_safety;
mod converge;
mod extensions;
mod inside;
mod lifecycle;
mod privileges;
mod support;
