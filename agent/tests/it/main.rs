//! Integration tests of the agent against real Postgres servers.

mod converge;
mod lifecycle;
mod support;
