//! End-to-end: the `pgplane` binary as a user runs it. Build it first
//! (`cargo build --bins`; `scripts/test.sh` does).

mod agent;
mod backups;
mod console;
mod crash;
mod first_hour;
mod gitops;
mod healing;
mod invariants;
mod plan;
mod secrets;
mod support;
mod tenant;
mod walkthrough;
