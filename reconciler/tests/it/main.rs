//! The control plane in-process against a real Postgres (`#[sqlx::test]`
//! gives every test a fresh database; `DATABASE_URL` comes from
//! `scripts/test-db.sh`).

mod api;
mod config_validation;
mod console;
mod console_pages;
mod extensions;
mod fuzz;
mod hardening;
mod isolation;
mod openapi;
mod reports;
mod sealing;
mod sources;
mod support;
mod vocabulary;
