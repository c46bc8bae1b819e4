//! End-to-end: the `pgplane` binary as a user runs it. Build it first
//! (`cargo build --bins`; `scripts/test.sh` does).

mod agent;
mod backups;
mod console;
mod console_pages;
mod console_wait;
mod crash;
mod extensions;
mod first_hour;
mod gitops;
mod healing;
mod inside;
mod invariants;
mod plan;
mod replicas;
mod secrets;
mod support;
mod tenant;
mod walkthrough;
