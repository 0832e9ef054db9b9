//! A deterministic toolkit for building chains in tests, benchmarks and devnet genesis files:
//! seeded keys, a funded and staked genesis, signed transactions and complete certificates
//! (commit, reveal and the quorum's votes) for any measured values.
#![allow(clippy::panic)] // a test and benchmark toolkit: a broken fixture should stop loudly

use doin_primitives::{
    Address, Amount, Block, BlockBody, BlockKind, BoundedVec, Certificate, Commit, CommitBody, DomainId,
    DomainSpec, FIXED_ONE, Hash, Keypair, Metric, Outcome, Reveal, RevealBody, Roles, Signed, Transaction,
    TxBody, TxKind, Vote, VoteBody, poo,
};

use crate::{
    BlockError, BlockTemplate, GenesisDomain, GenesisSpec, GenesisStake, ProtocolParams, Receipt, State,
    apply_block, build_block, certs, genesis::Allocation, quorum,
};

/// The test domain every [`TestNet`] registers.
pub const DOMAIN: &str = "quadratic";

/// The key for test account `i` (seeded, stable across runs).
pub fn key(i: usize) -> Keypair {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    seed[8..16].copy_from_slice(b"doin-tst");
    Keypair::from_seed(seed)
}

/// The test domain id.
pub fn domain_id() -> DomainId {
    doin_primitives::tx::string(DOMAIN)
}

/// A chain under construction with `n` funded accounts, of which the first `evaluators` are
/// staked evaluators and the next `optimizers` staked optimizers of [`DOMAIN`].
#[derive(Clone, Debug)]
pub struct TestNet {
    /// Account keys.
    pub keys: Vec<Keypair>,
    /// The genesis spec.
    pub spec: GenesisSpec,
    /// The genesis block.
    pub genesis: Block,
    /// The current state.
    pub state: State,
    /// Blocks applied so far (after genesis).
    pub blocks: Vec<Block>,
    /// Timestamp of the next block, ms.
    pub now_ms: u64,
}

impl TestNet {
    /// A net with default parameters tuned for tests (1 s blocks, quick finality).
    pub fn new(accounts: usize, evaluators: usize, optimizers: usize) -> Self {
        let params = ProtocolParams {
            target_block_time_ms: 1_000,
            max_block_interval_ms: 5_000,
            heartbeat_slot_ms: 1_000,
            unbonding_blocks: 3,
            reputation_half_life_blocks: 100,
            challenge_window_blocks: 2,
            anchor_interval: 6,
            ..ProtocolParams::default()
        };
        Self::with_params(accounts, evaluators, optimizers, params)
    }

    /// A net with the given parameters.
    pub fn with_params(
        accounts: usize,
        evaluators: usize,
        optimizers: usize,
        params: ProtocolParams,
    ) -> Self {
        Self::with_domain(accounts, evaluators, optimizers, params, DomainSpec::example(DOMAIN, 4))
    }

    /// A net with the given parameters whose [`DOMAIN`] is registered with `domain` (its id is
    /// replaced by [`DOMAIN`]).
    pub fn with_domain(
        accounts: usize,
        evaluators: usize,
        optimizers: usize,
        params: ProtocolParams,
        mut domain: DomainSpec,
    ) -> Self {
        domain.id = domain_id();
        let keys: Vec<Keypair> = (0..accounts).map(key).collect();
        let mut stakes = Vec::new();
        for (i, k) in keys.iter().enumerate().take(evaluators + optimizers) {
            let roles = if i < evaluators { Roles::EVALUATOR } else { Roles::OPTIMIZER };
            stakes.push(GenesisStake {
                address: k.address(),
                amount: Amount::doin(100),
                roles,
                domains: vec![domain_id()],
            });
        }
        let spec = GenesisSpec {
            chain_id: 7,
            timestamp_ms: 1_700_000_000_000,
            params,
            allocations: keys
                .iter()
                .map(|k| Allocation { address: k.address(), balance: Amount::doin(1_000_000) })
                .collect(),
            stakes,
            domains: vec![GenesisDomain { spec: domain, bounty: Amount::doin(10) }],
        };
        let (state, genesis) = spec.build().unwrap_or_else(|e| panic!("test genesis: {e}"));
        let now_ms = spec.timestamp_ms + 1_000;
        Self { keys, spec, genesis, state, blocks: Vec::new(), now_ms }
    }

    /// Address of account `i`.
    pub fn addr(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    /// The key of `address`, if it is a test account.
    pub fn key_of(&self, address: &Address) -> Option<&Keypair> {
        self.keys.iter().find(|k| k.address() == *address)
    }

    /// A signed transaction from account `i` with an explicit nonce.
    pub fn tx_with_nonce(&self, i: usize, nonce: u64, kind: TxKind) -> Transaction {
        let body = TxBody {
            chain_id: self.spec.chain_id,
            sender: self.addr(i),
            nonce,
            max_fee: Amount(1_000),
            priority_fee: Amount(2),
            kind,
        };
        Signed::sign(body, &self.keys[i])
    }

    /// A signed transaction from account `i` with its next nonce in the current state.
    pub fn tx(&self, i: usize, kind: TxKind) -> Transaction {
        self.tx_with_nonce(i, self.state.account(&self.addr(i)).nonce, kind)
    }

    /// A signed transfer.
    pub fn transfer(&self, from: usize, to: Address, amount: Amount, nonce: u64) -> Transaction {
        self.tx_with_nonce(from, nonce, TxKind::Transfer { to, amount })
    }

    /// A commit and its reveal by account `optimizer`, referencing the current tip.
    pub fn commit_reveal(&self, optimizer: usize, params: Vec<i64>, claimed: Metric) -> (Commit, Reveal) {
        self.commit_reveal_at(optimizer, params, claimed, self.state.tip().hash)
    }

    /// A commit and reveal against an explicit reference block.
    pub fn commit_reveal_at(
        &self,
        optimizer: usize,
        params: Vec<i64>,
        claimed: Metric,
        reference: Hash,
    ) -> (Commit, Reveal) {
        let key = &self.keys[optimizer];
        let params: poo::Params = BoundedVec::try_from_vec(params).unwrap_or_default();
        let salt = *Hash::of_encoded(&(optimizer as u64, &params, claimed.0)).as_bytes();
        let commit = Signed::sign(
            CommitBody {
                domain: domain_id(),
                optimizer: key.address(),
                optimae_hash: poo::optimae_hash(&params, &salt, &key.address()),
                claimed,
                reference_block: reference,
            },
            key,
        );
        let reveal = Signed::sign(
            RevealBody {
                commit: commit.id(),
                optimizer: key.address(),
                params,
                salt,
                artifact: None,
                experiment: Default::default(),
            },
            key,
        );
        (commit, reveal)
    }

    /// A vote by `evaluator` (who must be a test account).
    pub fn vote(&self, evaluator: &Address, commit: Hash, round: u8, measured: Metric) -> Vote {
        let key = self.key_of(evaluator).unwrap_or_else(|| panic!("no key for {evaluator:?}"));
        Signed::sign(
            VoteBody {
                commit,
                evaluator: *evaluator,
                round,
                measured,
                data_hash: Hash::of(&commit.0),
                artifact_measured: None,
            },
            key,
        )
    }

    /// The quorums of a sealed commit.
    pub fn quorums(&self, commit: &Commit) -> quorum::Quorums {
        quorum::quorums_for(&self.state, &commit.domain, &commit.optimizer, &commit.id())
            .unwrap_or_else(|| panic!("commit not sealed on this chain"))
    }

    /// A block by the seal leader of the first slot after the tip (a heartbeat: it may come at
    /// once when it includes or seals commits).
    pub fn seal_block(&mut self, body: BlockBody) -> Result<Receipt, BlockError> {
        let ts = self.state.meta().timestamp_ms + 1;
        let leader = crate::seal_leader(&self.state, 0).unwrap_or(self.addr(0));
        let generator = self.keys.iter().position(|k| k.address() == leader).unwrap_or(0);
        let (block, _, _) = build_block(
            &self.state,
            BlockTemplate { key: &self.keys[generator], timestamp_ms: ts, kind: BlockKind::Heartbeat, body },
        )?;
        let (state, receipt) = apply_block(&self.state, &block)?;
        self.state = state;
        self.blocks.push(block);
        self.now_ms = self.now_ms.max(ts + 1);
        Ok(receipt)
    }

    /// Includes `commits` on chain and seals them (two seal-leader blocks), so that their
    /// quorums are drawn.
    pub fn include(&mut self, commits: Vec<Commit>) -> Result<(), BlockError> {
        self.seal_block(BlockBody {
            commits: BoundedVec::try_from_vec(commits).unwrap_or_default(),
            ..Default::default()
        })?;
        self.seal_block(BlockBody::default())?;
        Ok(())
    }

    /// A complete first-round certificate in which every quorum member measures `measured(i)`
    /// (i = position in the quorum); the outcome is computed as validators will. Includes and
    /// seals the commit on chain first.
    pub fn certificate(
        &mut self,
        optimizer: usize,
        params: Vec<i64>,
        claimed: Metric,
        measured: impl Fn(usize) -> Metric,
    ) -> Certificate {
        self.try_certificate(optimizer, params, claimed, measured)
            .unwrap_or_else(|e| panic!("commit not includable: {e}"))
    }

    /// [`TestNet::certificate`], or why its commit cannot be included.
    pub fn try_certificate(
        &mut self,
        optimizer: usize,
        params: Vec<i64>,
        claimed: Metric,
        measured: impl Fn(usize) -> Metric,
    ) -> Result<Certificate, BlockError> {
        let (commit, reveal) = self.commit_reveal(optimizer, params, claimed);
        // A commit included before (the same claim twice) is already sealed.
        if self.state.committed_at(&commit.id()).is_none() {
            self.include(vec![commit.clone()])?;
        }
        Ok(self.sealed_certificate(commit, reveal, measured))
    }

    /// A complete first-round certificate for a commit already sealed on chain.
    pub fn sealed_certificate(
        &self,
        commit: Commit,
        reveal: Reveal,
        measured: impl Fn(usize) -> Metric,
    ) -> Certificate {
        let q = self.quorums(&commit);
        let votes: Vec<Vote> =
            q.first.iter().enumerate().map(|(i, a)| self.vote(a, commit.id(), 0, measured(i))).collect();
        let outcome = outcome_for(&self.state, &commit, &votes);
        Certificate {
            commit,
            reveal,
            votes: BoundedVec::try_from_vec(votes).unwrap_or_default(),
            escalation: BoundedVec::new(),
            outcome,
        }
    }

    /// Builds, re-validates with [`apply_block`] and applies a block by account `generator`.
    pub fn produce(
        &mut self,
        generator: usize,
        kind: BlockKind,
        body: BlockBody,
    ) -> Result<Receipt, BlockError> {
        let timestamp_ms = match kind {
            BlockKind::Work => self.now_ms,
            BlockKind::Heartbeat => {
                self.now_ms.max(self.state.meta().timestamp_ms + self.spec.params.max_block_interval_ms)
            }
        };
        let (block, _, _) =
            build_block(&self.state, BlockTemplate { key: &self.keys[generator], timestamp_ms, kind, body })?;
        let (state, receipt) = apply_block(&self.state, &block)?;
        self.state = state;
        self.blocks.push(block);
        self.now_ms = timestamp_ms + self.spec.params.target_block_time_ms;
        Ok(receipt)
    }

    /// A work block carrying `certificates`.
    pub fn work_block(
        &mut self,
        generator: usize,
        certificates: Vec<Certificate>,
    ) -> Result<Receipt, BlockError> {
        let body = BlockBody {
            certificates: BoundedVec::try_from_vec(certificates).unwrap_or_default(),
            ..Default::default()
        };
        self.produce(generator, BlockKind::Work, body)
    }

    /// A heartbeat block with `transactions`, produced by the slot leader.
    pub fn heartbeat(&mut self, transactions: Vec<Transaction>) -> Result<Receipt, BlockError> {
        let body = BlockBody {
            transactions: BoundedVec::try_from_vec(transactions).unwrap_or_default(),
            ..Default::default()
        };
        self.heartbeat_with(body)
    }

    /// A heartbeat block with an arbitrary body, produced by the slot leader.
    pub fn heartbeat_with(&mut self, body: BlockBody) -> Result<Receipt, BlockError> {
        let ts = self.now_ms.max(self.state.meta().timestamp_ms + self.spec.params.max_block_interval_ms);
        self.now_ms = ts;
        let slot = crate::heartbeat_slot(&self.state, ts).unwrap_or(0);
        let leader = crate::heartbeat_leader(&self.state, slot).unwrap_or(self.addr(0));
        let generator = self.keys.iter().position(|k| k.address() == leader).unwrap_or(0);
        self.produce(generator, BlockKind::Heartbeat, body)
    }

    /// An improving certificate by `optimizer` (included, sealed) in a work block by `generator`.
    pub fn improve(&mut self, generator: usize, optimizer: usize, loss: f64) -> Result<Receipt, BlockError> {
        let cert = self.try_improving_certificate(optimizer, loss)?;
        self.work_block(generator, vec![cert])
    }

    /// Makes `optimizer`'s improving claim to `loss` the champion (in a work block by
    /// `generator`), its reveal attaching the model `artifact` and every quorum member measuring
    /// the model at `quality`.
    pub fn model_champion(
        &mut self,
        generator: usize,
        optimizer: usize,
        loss: f64,
        artifact: Hash,
        quality: Metric,
    ) -> Result<Receipt, BlockError> {
        let m = Metric((loss * FIXED_ONE as f64) as i64);
        let x = (loss.sqrt() * FIXED_ONE as f64 / 2.0) as i64;
        let (commit, reveal) = self.commit_reveal(optimizer, vec![x, x, x, x], m);
        let reveal =
            Signed::sign(RevealBody { artifact: Some(artifact), ..reveal.body }, &self.keys[optimizer]);
        self.include(vec![commit.clone()])?;
        let votes: Vec<Vote> = self
            .quorums(&commit)
            .first
            .iter()
            .map(|a| {
                let body =
                    VoteBody { artifact_measured: Some(quality), ..self.vote(a, commit.id(), 0, m).body };
                Signed::sign(body, self.key_of(a).unwrap_or_else(|| panic!("no key for {a:?}")))
            })
            .collect();
        let outcome = outcome_for(&self.state, &commit, &votes);
        let cert = Certificate {
            commit,
            reveal,
            votes: BoundedVec::try_from_vec(votes).unwrap_or_default(),
            escalation: BoundedVec::new(),
            outcome,
        };
        self.work_block(generator, vec![cert])
    }

    /// An improving certificate by `optimizer` whose quorum measures exactly the claim.
    pub fn improving_certificate(&mut self, optimizer: usize, loss: f64) -> Certificate {
        self.try_improving_certificate(optimizer, loss)
            .unwrap_or_else(|e| panic!("commit not includable: {e}"))
    }

    /// [`TestNet::improving_certificate`], or why its commit cannot be included.
    pub fn try_improving_certificate(
        &mut self,
        optimizer: usize,
        loss: f64,
    ) -> Result<Certificate, BlockError> {
        let m = Metric((loss * FIXED_ONE as f64) as i64);
        let x = (loss.sqrt() * FIXED_ONE as f64 / 2.0) as i64;
        self.try_certificate(optimizer, vec![x, x, x, x], m, |_| m)
    }
}

impl TestNet {
    /// Account `i`'s finality vote for this chain's checkpoint at `height`, from the chain's
    /// justified checkpoint.
    pub fn finality_vote(&self, i: usize, height: u64) -> doin_primitives::FinalityVote {
        let hash = self.state.recent_hash_at(height).unwrap_or_default();
        let body = doin_primitives::FinalityVoteBody {
            chain_id: self.state.meta().chain_id,
            voter: self.addr(i),
            source: self.state.meta().justified,
            target: doin_primitives::Checkpoint { height, hash },
        };
        Signed::sign(body, &self.keys[i])
    }

    /// A heartbeat with `transactions` that also carries every staked test account's finality
    /// vote for the newest checkpoint at or below the tip, if it is not justified yet: a chain
    /// whose stakers all vote, as a live network's do.
    pub fn voting_heartbeat(&mut self, transactions: Vec<Transaction>) -> Result<Receipt, BlockError> {
        let depth = self.state.params().finality_depth.max(1);
        let tip = self.state.height();
        let target = tip - tip % depth;
        let mut votes = Vec::new();
        if target > self.state.meta().justified.height {
            for i in 0..self.keys.len() {
                let staked = self.state.stake(&self.addr(i)).is_some_and(|s| s.amount.0 > 0);
                if staked && self.state.finality_voted(&self.addr(i), target).is_none() {
                    votes.push(self.finality_vote(i, target));
                }
            }
        }
        let votes = crate::finality::includable(&self.state, &votes, votes.len());
        let body = BlockBody {
            transactions: BoundedVec::try_from_vec(transactions).unwrap_or_default(),
            finality_votes: BoundedVec::try_from_vec(votes).unwrap_or_default(),
            ..Default::default()
        };
        self.heartbeat_with(body)
    }
}

/// Re-seals `block` around a different body: recomputes the body roots, applies `edit` to the
/// header and signs it with `key`. Builds deliberately invalid blocks for tests and vectors.
pub fn reseal(
    block: &Block,
    body: BlockBody,
    key: &Keypair,
    edit: impl FnOnce(&mut doin_primitives::HeaderBody),
) -> Block {
    let mut header = block.header.body.clone();
    header.tx_root = body.tx_root();
    header.cert_root = body.cert_root();
    edit(&mut header);
    Block { header: Signed::sign(header, key), body }
}

/// The outcome validators compute for a first-round certificate with these votes.
pub fn outcome_for(state: &State, commit: &Commit, votes: &[Vote]) -> Outcome {
    let spec = state.domain(&commit.domain).map(|d| d.spec.clone());
    let m = certs::median(&votes.iter().map(|v| v.measured).collect::<Vec<_>>());
    spec.and_then(|s| certs::outcome(&s, commit.claimed, m)).unwrap_or(Outcome::Accept)
}
