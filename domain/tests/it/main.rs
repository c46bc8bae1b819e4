//! Integration tests of the domain crate: the full state-machine table and
//! the generated documentation.

mod diagram;
mod fsm_table;
mod postgres;
mod settle;
