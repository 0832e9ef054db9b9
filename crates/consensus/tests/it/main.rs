//! Integration tests of the state-transition function.

mod certificates;
mod chain;
mod disputes;
mod federated;
mod finality;
mod genesis;
mod properties;
mod transactions;
mod vectors;
