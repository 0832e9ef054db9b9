//! Pending transactions: signature-checked on entry, capped in total and per sender, and
//! selected for a block in nonce order per sender with senders ordered by effective tip
//! (EIP-1559: `min(priority_fee, max_fee − base_fee)`).

use std::collections::{BTreeMap, HashMap};

use doin_consensus::State;
use doin_primitives::{Address, Amount, Hash, Transaction};

/// The transaction pool.
#[derive(Debug)]
pub struct Mempool {
    txs: HashMap<Hash, Transaction>,
    by_sender: HashMap<Address, BTreeMap<u64, Hash>>,
    cap: usize,
    per_sender: usize,
}

impl Mempool {
    /// A pool of at most `cap` transactions, `per_sender` from one account.
    pub fn new(cap: usize, per_sender: usize) -> Self {
        Self { txs: HashMap::new(), by_sender: HashMap::new(), cap, per_sender }
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Every held transaction, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Transaction> {
        self.txs.values()
    }

    /// A held transaction.
    pub fn get(&self, id: &Hash) -> Option<Transaction> {
        self.txs.get(id).cloned()
    }

    /// The nonce of `sender`'s next transaction: after its pending ones on `state`.
    pub fn next_nonce(&self, sender: &Address, state: &State) -> u64 {
        let mut next = state.account(sender).nonce;
        if let Some(pending) = self.by_sender.get(sender) {
            while pending.contains_key(&next) {
                next += 1;
            }
        }
        next
    }

    /// Admits a transaction, or says why not.
    pub fn insert(&mut self, tx: Transaction, state: &State) -> Result<(), String> {
        let id = tx.id();
        if self.txs.contains_key(&id) {
            return Ok(());
        }
        let b = &tx.body;
        if b.chain_id != state.meta().chain_id {
            return Err(format!("chain id {} is not this chain's {}", b.chain_id, state.meta().chain_id));
        }
        if !tx.verify() {
            return Err("bad signature".into());
        }
        let next = state.account(&b.sender).nonce;
        if b.nonce < next {
            return Err(format!("nonce {} already used (next is {next})", b.nonce));
        }
        if b.nonce > next + self.per_sender as u64 {
            return Err(format!("nonce {} too far ahead of {next}", b.nonce));
        }
        if b.max_fee < state.meta().base_fee {
            return Err(format!("max_fee {} below the base fee {}", b.max_fee.0, state.meta().base_fee.0));
        }
        let sender = self.by_sender.entry(b.sender).or_default();
        if sender.len() >= self.per_sender && !sender.contains_key(&b.nonce) {
            return Err(format!("sender has {} pending transactions (limit)", sender.len()));
        }
        if self.txs.len() >= self.cap {
            return Err("mempool full".into());
        }
        // A replacement for the same nonce must pay a higher tip.
        if let Some(old) = sender.get(&b.nonce).and_then(|h| self.txs.get(h)) {
            if old.body.priority_fee >= b.priority_fee {
                return Err("a transaction with this nonce and an equal or higher tip is pending".into());
            }
            let old_id = old.id();
            self.txs.remove(&old_id);
        }
        sender.insert(b.nonce, id);
        self.txs.insert(id, tx);
        Ok(())
    }

    /// Removes a transaction (included in a block, or refused by block building).
    pub fn remove(&mut self, id: &Hash) {
        if let Some(tx) = self.txs.remove(id)
            && let Some(s) = self.by_sender.get_mut(&tx.body.sender)
        {
            s.remove(&tx.body.nonce);
            if s.is_empty() {
                self.by_sender.remove(&tx.body.sender);
            }
        }
    }

    /// Up to `max` transactions for a block on `state`: consecutive nonces from each sender's
    /// next one, best-tipping senders first.
    pub fn select(&mut self, state: &State, max: usize) -> Vec<Transaction> {
        let base = state.meta().base_fee;
        let tip = |t: &Transaction| -> Amount {
            Amount(t.body.priority_fee.0.min(t.body.max_fee.0.saturating_sub(base.0)))
        };
        let mut stale = Vec::new();
        let mut runs: Vec<(Amount, Vec<Transaction>)> = Vec::new();
        for (sender, nonces) in &self.by_sender {
            let mut next = state.account(sender).nonce;
            let mut run = Vec::new();
            for (nonce, id) in nonces {
                if *nonce < next {
                    stale.push(*id);
                    continue;
                }
                if *nonce != next {
                    break;
                }
                if let Some(t) = self.txs.get(id) {
                    run.push(t.clone());
                }
                next += 1;
            }
            if let Some(first) = run.first() {
                runs.push((tip(first), run));
            }
        }
        for id in stale {
            self.remove(&id);
        }
        runs.sort_by_key(|r| std::cmp::Reverse(r.0));
        runs.into_iter().flat_map(|(_, r)| r).take(max).collect()
    }
}
