//! End-to-end tests live in `tests/`; they run the built `pgplane` binary.
