//! Payment channels this node is paid through — the payee's side (DESIGN §6, `docs/design.md`
//! §22b). Each paid request carries the payer's signed cumulative update; the book checks it
//! against the channel on chain (this node is its payee, the payer signed it, it is open, the
//! nonce is above the best held, the new total is within the deposit and adds at least the
//! price) and keeps the best update per channel. Checking and taking are separate steps, so a
//! request that fails after its payment was checked (its inputs do not fit the model) is not
//! charged, and a payment taken once is never taken again (a replay's nonce is not above the
//! best). Kept in an append-only log ([`log`]) so the best updates survive a restart.
//!
//! On every new tip [`ChannelBook::due`] says what to send: a challenge with the best update
//! when the payer posted a close (or the channel expired) with less, and the payee's own close
//! when asked. Bounded: [`MAX_CHANNELS`] channels, each opened on chain with a deposit.

pub mod log;
pub mod verify;

use std::collections::{BTreeMap, HashMap};

use doin_consensus::State;
use doin_primitives::{Address, Amount, ChannelUpdate, Hash, TxKind};

/// Channels held at most (each needs an on-chain deposit to exist).
pub const MAX_CHANNELS: usize = 100_000;
/// Largest encoded update accepted.
pub const MAX_UPDATE_BYTES: usize = 512;
/// Blocks a challenge or close waits before it is sent again while the chain still shows the
/// channel (the first may have been lost).
const RESEND_BLOCKS: u64 = 10;

/// Why a payment was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayError {
    /// The request carries no payment and the domain charges `price`.
    Required,
    /// The payment is not a decodable, correctly signed update.
    Malformed(String),
    /// The update names a channel that does not pay this node, or one that is closing or gone.
    WrongChannel(String),
    /// The update is not newer than the best held (a replay, or an older update).
    Stale {
        /// The update's nonce.
        nonce: u64,
        /// The best nonce held.
        best: u64,
    },
    /// The update adds less than the price (or pays more than the deposit).
    Underpaid(String),
}

impl PayError {
    /// The error's name (the HTTP body's `error`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Required => "payment_required",
            Self::Malformed(_) => "bad_payment",
            Self::WrongChannel(_) => "wrong_channel",
            Self::Stale { .. } => "stale_payment",
            Self::Underpaid(_) => "underpaid",
        }
    }
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Required => write!(f, "this domain charges per request: send a channel update"),
            Self::Malformed(why) | Self::WrongChannel(why) | Self::Underpaid(why) => f.write_str(why),
            Self::Stale { nonce, best } => {
                write!(f, "update nonce {nonce} is not above the best held ({best}): replayed or old")
            }
        }
    }
}

/// A checked payment: what it adds and the update to take.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The update.
    pub update: ChannelUpdate,
    /// What it adds to the best held.
    pub adds: Amount,
}

/// What the book asks the node to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The channel.
    pub channel: Hash,
    /// `ChallengeChannel` or `CloseChannel` with the best update.
    pub kind: TxKind,
}

/// One channel's entry.
#[derive(Debug, Clone)]
struct Entry {
    best: ChannelUpdate,
    /// Height a challenge or close was last sent at.
    sent_at: Option<u64>,
    /// The operator asked to close.
    close: bool,
}

/// The payee's book.
#[derive(Debug, Default)]
pub struct ChannelBook {
    me: Address,
    entries: HashMap<Hash, Entry>,
    /// Settled channels: what each paid this node (the best update held when it left the chain).
    settled: BTreeMap<Hash, Amount>,
}

impl ChannelBook {
    /// An empty book for payee `me`.
    pub fn new(me: Address) -> Self {
        Self { me, entries: HashMap::new(), settled: BTreeMap::new() }
    }

    /// Decodes a payment header's bytes, without checking the signature.
    pub fn decode_unverified(bytes: &[u8]) -> Result<ChannelUpdate, PayError> {
        doin_primitives::decode(bytes, MAX_UPDATE_BYTES, "channel update")
            .map_err(|e| PayError::Malformed(format!("not a channel update: {e}")))
    }

    /// Decodes a payment header's bytes and checks the signature.
    pub fn decode(bytes: &[u8]) -> Result<ChannelUpdate, PayError> {
        let update = Self::decode_unverified(bytes)?;
        if !update.verify() {
            return Err(PayError::Malformed("the update's signature does not verify".into()));
        }
        Ok(update)
    }

    /// Checks `update` (signature already verified by [`ChannelBook::decode`]) as a payment of
    /// at least `price` against the channel on `state`; takes nothing.
    pub fn check(&self, state: &State, update: ChannelUpdate, price: Amount) -> Result<Checked, PayError> {
        let b = &update.body;
        let channel = state
            .channel(&b.channel)
            .ok_or_else(|| PayError::WrongChannel(format!("no open channel {} on chain", b.channel)))?;
        if channel.payee != self.me {
            return Err(PayError::WrongChannel(format!(
                "channel {} pays {}, not this node",
                b.channel, channel.payee
            )));
        }
        if channel.payer != b.payer {
            return Err(PayError::WrongChannel(format!(
                "the update is not signed by channel {}'s payer",
                b.channel
            )));
        }
        if channel.closing.is_some() {
            return Err(PayError::WrongChannel(format!("channel {} is closing", b.channel)));
        }
        if b.paid_total > channel.deposit {
            return Err(PayError::Underpaid(format!(
                "the update pays {}, more than the deposit {}",
                b.paid_total.0, channel.deposit.0
            )));
        }
        let (best_nonce, best_paid) = self
            .entries
            .get(&b.channel)
            .map_or((0, Amount::ZERO), |e| (e.best.body.nonce, e.best.body.paid_total));
        if b.nonce <= best_nonce {
            return Err(PayError::Stale { nonce: b.nonce, best: best_nonce });
        }
        let adds = b.paid_total.checked_sub(best_paid).unwrap_or(Amount::ZERO);
        if adds < price {
            return Err(PayError::Underpaid(format!(
                "the update adds {} to the {} already paid; the price is {}",
                adds.0, best_paid.0, price.0
            )));
        }
        if !self.entries.contains_key(&b.channel) && self.entries.len() >= MAX_CHANNELS {
            return Err(PayError::WrongChannel(format!("this node holds {MAX_CHANNELS} channels already")));
        }
        Ok(Checked { update, adds })
    }

    /// Takes a checked payment, unless another update of the channel was taken since (then it
    /// is stale and nothing is taken).
    pub fn take(&mut self, checked: &Checked) -> Result<(), PayError> {
        let b = &checked.update.body;
        if let Some(e) = self.entries.get_mut(&b.channel) {
            if b.nonce <= e.best.body.nonce || b.paid_total < e.best.body.paid_total {
                return Err(PayError::Stale { nonce: b.nonce, best: e.best.body.nonce });
            }
            e.best = checked.update.clone();
        } else {
            self.entries
                .insert(b.channel, Entry { best: checked.update.clone(), sent_at: None, close: false });
        }
        Ok(())
    }

    /// Restores an update from the log (the better of it and what is held).
    pub fn restore(&mut self, update: ChannelUpdate) {
        let id = update.body.channel;
        match self.entries.get_mut(&id) {
            Some(e) if e.best.body.nonce >= update.body.nonce => {}
            Some(e) => e.best = update,
            None => {
                self.entries.insert(id, Entry { best: update, sent_at: None, close: false });
            }
        }
    }

    /// Restores a settled channel from the log.
    pub fn restore_settled(&mut self, channel: Hash, paid: Amount) {
        self.entries.remove(&channel);
        self.settled.insert(channel, paid);
    }

    /// The best update held for `channel`.
    pub fn best(&self, channel: &Hash) -> Option<&ChannelUpdate> {
        self.entries.get(channel).map(|e| &e.best)
    }

    /// Every best update held (for the log's compaction).
    pub fn updates(&self) -> impl Iterator<Item = &ChannelUpdate> {
        self.entries.values().map(|e| &e.best)
    }

    /// Settled channels and what each paid.
    pub fn settled(&self) -> &BTreeMap<Hash, Amount> {
        &self.settled
    }

    /// Asks for the payee's close of `channel` with the best update; false if none is held.
    pub fn request_close(&mut self, channel: &Hash) -> bool {
        match self.entries.get_mut(channel) {
            Some(e) => {
                e.close = true;
                e.sent_at = None;
                true
            }
            None => false,
        }
    }

    /// What to send at the tip `state` (at `height`), and the channels that left the chain
    /// (settled: moved to [`ChannelBook::settled`] with the best update's total, returned so
    /// the log records them). A payer's close (or an expiry) posting less than the best update
    /// is challenged; a close asked for is sent; either again after [`RESEND_BLOCKS`] while the
    /// chain still shows the channel.
    pub fn due(&mut self, state: &State, height: u64) -> (Vec<Due>, Vec<(Hash, Amount)>) {
        let mut due = Vec::new();
        let mut gone = Vec::new();
        for (id, e) in &mut self.entries {
            let Some(channel) = state.channel(id) else {
                gone.push((*id, e.best.body.paid_total));
                continue;
            };
            if e.sent_at.is_some_and(|at| height < at.saturating_add(RESEND_BLOCKS)) {
                continue;
            }
            let kind = match &channel.closing {
                Some(c) if c.nonce < e.best.body.nonce => {
                    Some(TxKind::ChallengeChannel { newer_update: e.best.clone() })
                }
                None if e.close => Some(TxKind::CloseChannel { final_update: e.best.clone() }),
                _ => None,
            };
            if let Some(kind) = kind {
                e.sent_at = Some(height);
                due.push(Due { channel: *id, kind });
            }
        }
        for (id, paid) in &gone {
            self.entries.remove(id);
            self.settled.insert(*id, *paid);
        }
        due.sort_by_key(|d| d.channel);
        gone.sort_by_key(|g| g.0);
        (due, gone)
    }

    /// Totals: paid into open channels (claimable with the best updates) and paid by settled
    /// ones; open channel count.
    pub fn earnings(&self) -> (Amount, Amount, usize) {
        let sum = |it: &mut dyn Iterator<Item = Amount>| {
            it.fold(Amount::ZERO, |a, b| Amount(a.0.saturating_add(b.0)))
        };
        let open = sum(&mut self.entries.values().map(|e| e.best.body.paid_total));
        let settled = sum(&mut self.settled.values().copied());
        (open, settled, self.entries.len())
    }
}

#[cfg(test)]
mod tests;
