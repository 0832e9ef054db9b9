//! `/doin/sync/1`: request-response for chain sync, snapshots and artifacts. Messages are
//! length-prefixed borsh with size limits enforced before anything is allocated.

use borsh::{BorshDeserialize, BorshSerialize};
use doin_primitives::{BlockBody, BlockHeader, Hash};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

/// Protocol id of the sync protocol.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/doin/sync/1");
/// Largest encoded request.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest encoded response.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Headers per request at most.
pub const MAX_HEADERS: u32 = 512;
/// Bodies per request at most (the seed API's page size).
pub const MAX_BODIES: u32 = 50;
/// Transaction ids per request at most.
pub const MAX_TX_IDS: usize = 4096;

/// A sync request.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SyncRequest {
    /// The peer's chain status.
    Status,
    /// Canonical headers from `from`, at most `count` (≤ [`MAX_HEADERS`]).
    Headers {
        /// First height.
        from: u64,
        /// How many.
        count: u32,
    },
    /// Canonical bodies from `from`, at most `count` (≤ [`MAX_BODIES`]).
    Bodies {
        /// First height.
        from: u64,
        /// How many.
        count: u32,
    },
    /// The snapshot manifest (JSON bytes).
    SnapshotManifest,
    /// One snapshot chunk by index.
    SnapshotChunk {
        /// Chunk index.
        index: u32,
    },
    /// Transactions by id (to complete a compact block), at most [`MAX_TX_IDS`].
    Transactions {
        /// Ids.
        ids: Vec<Hash>,
    },
    /// One block body by block hash (when more than transactions are missing).
    Body {
        /// Block hash.
        hash: Hash,
    },
    /// One chunk of a content-addressed artifact.
    Artifact {
        /// Artifact hash.
        hash: Hash,
        /// Chunk index.
        chunk: u32,
    },
}

/// Chain status of a peer.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Status {
    /// Genesis hash (peers on another chain are dropped).
    pub genesis: Hash,
    /// Tip hash.
    pub tip: Hash,
    /// Tip height.
    pub height: u64,
    /// Cumulative work at the tip.
    pub cumulative_work: u128,
    /// Finalized checkpoint height.
    pub finalized: u64,
    /// Justified checkpoint height (fork choice prefers the higher).
    pub justified: u64,
}

/// A sync response.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SyncResponse {
    /// Chain status.
    Status(Status),
    /// Headers in height order.
    Headers(Vec<BlockHeader>),
    /// Bodies in height order, with their block hashes.
    Bodies(Vec<(Hash, BlockBody)>),
    /// Transactions found (possibly fewer than asked).
    Transactions(Vec<doin_primitives::Transaction>),
    /// One body, if held.
    Body(Option<BlockBody>),
    /// Raw bytes (snapshot manifest or chunk).
    Bytes(Vec<u8>),
    /// An artifact chunk: total chunk count and this chunk's bytes.
    ArtifactChunk {
        /// Chunks in the artifact.
        total: u32,
        /// BLAKE3 of this chunk.
        hash: Hash,
        /// Bytes.
        data: Vec<u8>,
    },
    /// The request was refused or cannot be served.
    Error(String),
}

/// The codec: `u32` little-endian length, then borsh.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    max: usize,
) -> std::io::Result<()> {
    if bytes.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("message of {} bytes exceeds the limit of {max}", bytes.len()),
        ));
    }
    io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

fn decode<T: BorshDeserialize>(bytes: &[u8]) -> std::io::Result<T> {
    borsh::from_slice(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode(&read_frame(io, MAX_REQUEST_BYTES).await?)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode(&read_frame(io, MAX_RESPONSE_BYTES).await?)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &borsh::to_vec(&req)?, MAX_REQUEST_BYTES).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: SyncResponse,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &borsh::to_vec(&res)?, MAX_RESPONSE_BYTES).await
    }
}
