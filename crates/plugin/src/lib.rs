//! External plugins in any language (DESIGN §5, `docs/plugins.md`): a supervised process speaking
//! versioned JSON lines on stdin/stdout, and adapters that make such a process an
//! [`doin_optimize::Optimizer`] or a [`doin_optimize::domain::Domain`] — or a federated
//! contributor ([`PluginClient`], Flower's `NumPyClient` shape).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod adapters;
pub mod client;
pub mod host;

pub use adapters::{PluginDomain, PluginOptimizer};
pub use client::{ClientError, PluginClient};
pub use host::{Incident, PROTOCOL_VERSION, PluginError, PluginHost, PluginLimits, PluginSpec};
