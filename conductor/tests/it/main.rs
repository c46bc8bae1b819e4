//! The conductor against real PGMQ on a real Postgres (`#[sqlx::test]`), with
//! the simulated runtime for the protocol and the local runtime for real
//! instances.

mod isolation;
mod local;
mod protocol;
mod support;
