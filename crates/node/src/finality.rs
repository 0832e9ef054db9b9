//! The node's side of finality by stake (`doin_consensus::finality`): the votes it signs, never
//! two that could slash it, even across restarts; and the votes and evidence it admits from
//! gossip for its blocks.
//!
//! - [`Voter`] votes, once its chain is [`VOTE_DEPTH`] blocks past a checkpoint, for the link
//!   from its chain's justified checkpoint to that checkpoint. Before a vote leaves the node, its
//!   heights are written (fsync, then rename) to `finality-votes.json` in the data directory;
//!   a later vote must have a higher target and a source no lower, so this node never signs a
//!   double or surround vote, whatever restarts or reorgs come between.
//! - [`FinalityPool`] admits gossiped votes only from staked accounts for checkpoint links whose
//!   target lies within the chain's recent window, one per (voter, target height): at most
//!   [`MAX_POOLED_VOTES`], and a full pool refuses newcomers instead of evicting. A second,
//!   different vote that conflicts with one it holds becomes [`FinalityEvidence`].

use std::{
    collections::{BTreeMap, HashSet},
    io::Write,
    path::{Path, PathBuf},
};

use doin_consensus::{State, finality};
use doin_primitives::{
    Address, Checkpoint, FinalityEvidence, FinalityVote, FinalityVoteBody, Hash, Keypair, Signed,
    finality::conflict,
};
use serde::{Deserialize, Serialize};

/// Blocks a checkpoint must be buried under before this node votes for it (a checkpoint block
/// that two producers raced is settled by then).
pub const VOTE_DEPTH: u64 = 2;
/// Finality votes held at most (stakers × checkpoints in the window).
pub const MAX_POOLED_VOTES: usize = 16_384;
/// Finality evidence held at most.
pub const MAX_EVIDENCE: usize = 16;

/// The heights of the last vote this node signed, on the chain of `genesis`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastVote {
    /// The genesis hash of the chain voted on (a development chain reset with
    /// `--reset-chain` is another chain: its heights start again).
    pub genesis: Hash,
    /// Its source height.
    pub source: u64,
    /// Its target height.
    pub target: u64,
}

/// Signs this node's finality votes, with slashing protection on disk.
#[derive(Debug)]
pub struct Voter {
    path: PathBuf,
    genesis: Hash,
    last: Option<LastVote>,
}

impl Voter {
    /// The voter on the chain of `genesis` whose record lives at `path` (read if present; a
    /// record of another chain is no constraint here).
    pub fn load(path: &Path, genesis: Hash) -> Result<Self, String> {
        let last: Option<LastVote> = match std::fs::read(path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{}: not a finality vote record ({e}); the node will not vote without knowing what it signed",
                    path.display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self { path: path.to_owned(), genesis, last: last.filter(|l| l.genesis == genesis) })
    }

    /// The last vote signed.
    pub fn last(&self) -> Option<LastVote> {
        self.last
    }

    /// This node's vote on `state`'s chain, if one is due and safe: signed only after its
    /// heights are durably recorded.
    pub fn next_vote(&mut self, state: &State, key: &Keypair) -> Result<Option<FinalityVote>, String> {
        let me = key.address();
        if state.stake(&me).is_none_or(|s| s.amount.0 == 0) {
            return Ok(None);
        }
        let Some(target) = finality::checkpoint_below(state, state.height(), VOTE_DEPTH) else {
            return Ok(None);
        };
        let source = state.meta().justified;
        if target == 0 || target <= source.height {
            return Ok(None);
        }
        if let Some(last) = self.last
            && (target <= last.target || source.height < last.source)
        {
            return Ok(None);
        }
        let Some(hash) = state.recent_hash_at(target) else { return Ok(None) };
        let next = LastVote { genesis: self.genesis, source: source.height, target };
        self.record(next)?;
        let body = FinalityVoteBody {
            chain_id: state.meta().chain_id,
            voter: me,
            source,
            target: Checkpoint { height: target, hash },
        };
        Ok(Some(Signed::sign(body, key)))
    }

    fn record(&mut self, vote: LastVote) -> Result<(), String> {
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&vote).unwrap_or_default())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| format!("recording the finality vote in {}: {e}", self.path.display()))?;
        self.last = Some(vote);
        Ok(())
    }
}

/// Fault injection (`--adversary double-finality-vote`): this node's due vote and a second one
/// for another block at the same height, both to be published. Honest nodes never call it.
#[cfg(feature = "adversary")]
pub fn equivocate(state: &State, key: &Keypair, voter: &mut Voter) -> Option<[FinalityVote; 2]> {
    let vote = voter.next_vote(state, key).ok()??;
    let mut body = vote.body.clone();
    body.target.hash = Hash::of_parts(&[b"doin/equivocation", &body.target.hash.0]);
    Some([vote, Signed::sign(body, key)])
}

/// Why a gossiped finality vote was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Invalid whoever forwarded it (the peer is charged).
    Invalid(String),
    /// Possibly honest but of no use here (not charged).
    Useless(String),
}

/// Finality votes and evidence admitted from gossip (and this node's own votes).
#[derive(Debug, Default)]
pub struct FinalityPool {
    votes: BTreeMap<(Address, u64), FinalityVote>,
    evidence: Vec<FinalityEvidence>,
    evidence_seen: HashSet<Hash>,
}

impl FinalityPool {
    /// Admits a vote checked against the tip's `state`.
    pub fn admit(&mut self, state: &State, vote: &FinalityVote) -> Result<(), Refused> {
        let b = &vote.body;
        if b.chain_id != state.meta().chain_id {
            return Err(Refused::Invalid(format!("finality vote for chain {}", b.chain_id)));
        }
        let depth = state.params().finality_depth.max(1);
        if b.target.height == 0
            || !b.target.height.is_multiple_of(depth)
            || b.source.height >= b.target.height
        {
            return Err(Refused::Invalid("not a link between two checkpoints".into()));
        }
        if state.stake(&b.voter).is_none_or(|s| s.amount.0 == 0) {
            return Err(Refused::Invalid("finality vote by an account without stake".into()));
        }
        let window = state.params().history_len();
        let tip = state.height();
        if b.target.height.saturating_add(window) < tip || b.target.height > tip.saturating_add(window) {
            return Err(Refused::Useless("finality vote target outside the recent window".into()));
        }
        if let Some(held) = self.votes.get(&(b.voter, b.target.height)) {
            if held.body == *b {
                return Err(Refused::Useless("finality vote seen already".into()));
            }
            self.convict(held.clone(), vote.clone());
            // Not charged: a relay that saw this vote first forwarded it in good faith.
            return Err(Refused::Useless("a second finality vote for the same height".into()));
        }
        let surrounding = self
            .votes
            .range((b.voter, 0)..=(b.voter, u64::MAX))
            .find(|(_, held)| conflict(&held.body, b).is_some())
            .map(|(_, held)| held.clone());
        if let Some(held) = surrounding {
            self.convict(held, vote.clone());
            return Err(Refused::Useless("a finality vote surrounding or surrounded by another".into()));
        }
        if self.votes.len() >= MAX_POOLED_VOTES {
            return Err(Refused::Useless("finality vote pool full".into()));
        }
        self.votes.insert((b.voter, b.target.height), vote.clone());
        Ok(())
    }

    fn convict(&mut self, first: FinalityVote, second: FinalityVote) {
        let evidence = FinalityEvidence { first, second };
        if self.evidence_seen.len() >= MAX_POOLED_VOTES {
            self.evidence_seen.clear();
        }
        if self.evidence.len() < MAX_EVIDENCE && self.evidence_seen.insert(evidence.offence()) {
            self.evidence.push(evidence);
        }
    }

    /// Drops votes whose target left `state`'s recent window.
    pub fn prune(&mut self, state: &State) {
        let window = state.params().history_len();
        let tip = state.height();
        self.votes.retain(|(_, h), _| h.saturating_add(window) >= tip);
    }

    /// The votes held, by target height then voter.
    pub fn votes(&self) -> Vec<FinalityVote> {
        let mut v: Vec<FinalityVote> = self.votes.values().cloned().collect();
        v.sort_by_key(|x| (x.body.target.height, x.body.voter));
        v
    }

    /// Votes held.
    pub fn len(&self) -> usize {
        self.votes.len()
    }

    /// Whether no vote is held.
    pub fn is_empty(&self) -> bool {
        self.votes.is_empty()
    }

    /// Evidence found since the last call.
    pub fn take_evidence(&mut self) -> Vec<FinalityEvidence> {
        std::mem::take(&mut self.evidence)
    }
}

#[cfg(test)]
mod tests {
    use doin_consensus::testkit::TestNet;

    use super::*;

    fn chain(blocks: u64) -> TestNet {
        let mut net = TestNet::new(4, 4, 0);
        for _ in 0..blocks {
            net.heartbeat(Vec::new()).unwrap();
        }
        net
    }

    #[test]
    fn a_voter_never_signs_twice_for_a_height_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("finality-votes.json");
        let net = chain(9);
        let key = &net.keys[0];
        let genesis = net.genesis.hash();
        let mut voter = Voter::load(&path, genesis).unwrap();
        let vote = voter.next_vote(&net.state, key).unwrap().expect("checkpoint 6 is two blocks deep");
        assert_eq!(vote.body.target.height, 6);
        assert_eq!(vote.body.source.height, 0);
        assert!(voter.next_vote(&net.state, key).unwrap().is_none(), "one vote per checkpoint");
        // Restarted on its data directory, it remembers.
        let mut again = Voter::load(&path, genesis).unwrap();
        assert_eq!(again.last(), Some(LastVote { genesis, source: 0, target: 6 }));
        assert!(again.next_vote(&net.state, key).unwrap().is_none(), "no second vote after a restart");
        // Another chain of the same height (a fork) gets no vote for height 6 either.
        let mut fork = TestNet::new(4, 4, 0);
        let tx = fork.transfer(1, fork.addr(2), doin_primitives::Amount(1), 0);
        fork.heartbeat(vec![tx]).unwrap();
        for _ in 0..8 {
            fork.heartbeat(Vec::new()).unwrap();
        }
        assert_ne!(fork.state.recent_hash_at(6), net.state.recent_hash_at(6));
        assert!(again.next_vote(&fork.state, key).unwrap().is_none(), "never a double vote across forks");
        // Another chain (a reset development chain) starts its heights again.
        assert_eq!(Voter::load(&path, Hash([1; 32])).unwrap().last(), None);
        // A corrupt record stops voting rather than risk a slashable vote.
        std::fs::write(&path, b"{").unwrap();
        assert!(Voter::load(&path, genesis).unwrap_err().contains("will not vote"));
    }

    #[test]
    fn the_pool_refuses_strangers_and_turns_conflicting_votes_into_evidence() {
        let net = chain(9);
        let mut pool = FinalityPool::default();
        let target = Checkpoint { height: 6, hash: net.state.recent_hash_at(6).unwrap() };
        let vote = |key: &Keypair, target: Checkpoint| {
            let body = FinalityVoteBody {
                chain_id: net.state.meta().chain_id,
                voter: key.address(),
                source: Checkpoint::default(),
                target,
            };
            Signed::sign(body, key)
        };
        let stranger = Keypair::from_seed([9; 32]);
        assert!(matches!(pool.admit(&net.state, &vote(&stranger, target)), Err(Refused::Invalid(_))));
        let not_checkpoint = Checkpoint { height: 5, hash: target.hash };
        assert!(matches!(
            pool.admit(&net.state, &vote(&net.keys[0], not_checkpoint)),
            Err(Refused::Invalid(_))
        ));
        pool.admit(&net.state, &vote(&net.keys[0], target)).unwrap();
        assert!(matches!(pool.admit(&net.state, &vote(&net.keys[0], target)), Err(Refused::Useless(_))));
        let other = Checkpoint { height: 6, hash: Hash([1; 32]) };
        assert!(matches!(pool.admit(&net.state, &vote(&net.keys[0], other)), Err(Refused::Useless(_))));
        let evidence = pool.take_evidence();
        assert_eq!(evidence.len(), 1);
        assert!(finality::check_evidence(&net.state, &evidence[0]).is_ok(), "the evidence convicts");
        assert_eq!(pool.len(), 1);
    }
}
