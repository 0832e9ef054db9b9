//! Network errors.

/// A network operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Bad configuration.
    #[error("network configuration: {0}")]
    Config(String),
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}; choose another address or port")]
    Listen {
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Publishing failed (for example no peer subscribed yet).
    #[error("publish failed: {0}")]
    Publish(String),
    /// A request failed.
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// Peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The network task stopped.
    #[error("the network task has stopped")]
    Stopped,
    /// The command queue is full.
    #[error("the network command queue is full")]
    Busy,
}
