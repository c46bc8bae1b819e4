//! gitops integration tests: real git repositories (made with git2 and with
//! the `git` command), real files, no mocks.

mod config_values;
mod fuzz;
mod location;
mod manifests;
mod plans;
mod sources;
mod support;
