//! Integration tests of the state-transition function.

mod certificates;
mod chain;
mod properties;
mod transactions;
mod vectors;
