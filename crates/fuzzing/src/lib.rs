//! DOIN's fuzz targets as plain functions of the input bytes. Each panics only when an
//! invariant breaks (a decoder that panics, a block whose application changes its input state,
//! breaks coin conservation or is not deterministic, …), so the same function serves
//! cargo-fuzz (`fuzz/`, nightly) and the replay of the committed corpora (`fuzz/corpus/<target>/`)
//! as an ordinary test on stable.

pub mod chain;
pub mod config;
pub mod plugin;
pub mod wire;

/// A fuzz target: its name (the corpus directory and the cargo-fuzz binary) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("decode_block", chain::decode_block),
    ("decode_tx", chain::decode_tx),
    ("apply_block", chain::apply_block),
    ("gossip", wire::gossip),
    ("sync", wire::sync),
    ("plugin_lines", plugin::plugin_lines),
    ("config", config::config),
];

/// Seed inputs for `target` (the committed corpus is made from these by `make_corpus`): valid
/// encodings, so that mutation starts past the decoders' first checks.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "decode_block" => chain::block_seeds(),
        "decode_tx" => chain::tx_seeds(),
        "apply_block" => chain::apply_seeds(),
        "gossip" => wire::gossip_seeds(),
        "sync" => wire::sync_seeds(),
        "plugin_lines" => plugin::seeds(),
        "config" => config::seeds(),
        _ => Vec::new(),
    }
}

/// Reads the input as a stream of small choices.
#[derive(Debug)]
pub struct Choices<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Choices<'a> {
    /// Choices from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    /// The next byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        let v = u16::from_le_bytes([self.byte(), self.byte()]) as usize;
        if n == 0 { 0 } else { v % n }
    }

    /// The next 8 bytes as a number.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    /// Whether input is left.
    pub fn more(&self) -> bool {
        self.at < self.data.len()
    }
}
