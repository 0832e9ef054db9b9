//! Transaction application: nonces, fees and every transaction kind.

use doin_primitives::{Address, Amount, Hash, Transaction, TxKind, tx::ChannelUpdate};
use serde::{Deserialize, Serialize};

use crate::{
    economics,
    error::TxError,
    state::{
        Account, AnchorRecord, Channel, Closing, DomainState, DomainStats, StakeRecord, State, StateKey,
    },
};

/// What a block needs to know while applying its transactions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockCtx {
    pub height: u64,
    pub base_fee: Amount,
}

/// The outcome of one applied transaction.
#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, borsh::BorshSerialize, borsh::BorshDeserialize,
)]
pub struct TxReceipt {
    /// Transaction id.
    pub id: Hash,
    /// Weight used.
    pub weight: u64,
    /// Base fee burned.
    pub burned: Amount,
    /// Tip to the generator.
    pub tip: Amount,
    /// What the transaction paid out of escrow (a federated round's contributors, as the payout
    /// formula lists them, when the transaction settled the round).
    pub paid: Vec<(Address, Amount)>,
    /// Federated rounds the transaction settled (a round record, or the audit vote that decided
    /// a round), with the qualities they were paid by.
    pub settled: Vec<crate::federated::Settled>,
}

fn rejected(msg: impl Into<String>) -> TxError {
    TxError::Rejected(msg.into())
}

fn debit(state: &mut State, sender: Address, amount: Amount) -> Result<(), TxError> {
    let mut acc = state.account(&sender);
    acc.balance = acc.balance.checked_sub(amount).ok_or(TxError::InsufficientBalance {
        sender,
        balance: acc.balance,
        needed: amount,
    })?;
    state.set_account(sender, acc);
    Ok(())
}

/// Applies one transaction whose signature has been verified. On error the caller discards
/// the whole state copy, so partial effects never survive.
pub(crate) fn apply_tx(
    state: &mut State,
    tx: &Transaction,
    id: Hash,
    weight: u64,
    ctx: BlockCtx,
) -> Result<TxReceipt, TxError> {
    let body = &tx.body;
    if body.chain_id != state.meta.chain_id {
        return Err(TxError::ChainId { got: body.chain_id, expected: state.meta.chain_id });
    }
    let account = state.account(&body.sender);
    if body.nonce != account.nonce {
        return Err(TxError::Nonce { got: body.nonce, expected: account.nonce });
    }
    let (burn_per_unit, tip_per_unit) =
        economics::fee_per_unit(body.max_fee, body.priority_fee, ctx.base_fee)
            .ok_or(TxError::FeeTooLow { max_fee: body.max_fee, base_fee: ctx.base_fee })?;
    let burned = burn_per_unit.checked_mul(weight as u128).ok_or(TxError::Overflow("fee"))?;
    let tip = tip_per_unit.checked_mul(weight as u128).ok_or(TxError::Overflow("fee"))?;
    let fee = burned.checked_add(tip).ok_or(TxError::Overflow("fee"))?;
    let balance = account.balance.checked_sub(fee).ok_or(TxError::InsufficientBalance {
        sender: body.sender,
        balance: account.balance,
        needed: fee,
    })?;
    let nonce = account.nonce.checked_add(1).ok_or(TxError::Overflow("nonce"))?;
    state.set_account(body.sender, Account { balance, nonce });
    state.burn(burned).ok_or(TxError::Overflow("burned supply"))?;

    let sender = body.sender;
    let mut paid = Vec::new();
    let mut settled = Vec::new();
    match &body.kind {
        TxKind::Transfer { to, amount } => {
            debit(state, sender, *amount)?;
            state.credit(*to, *amount).ok_or(TxError::Overflow("recipient balance"))?;
        }
        TxKind::Stake { amount, roles, domains, preferences } => {
            for d in domains.iter() {
                if state.domain(d).is_none() {
                    return Err(rejected(format!("cannot stake for unregistered domain {d:?}")));
                }
            }
            debit(state, sender, *amount)?;
            let previous = state.stake(&sender).cloned();
            let total = previous
                .as_ref()
                .map_or(Amount::ZERO, |s| s.amount)
                .checked_add(*amount)
                .ok_or(TxError::Overflow("stake"))?;
            if total == Amount::ZERO {
                return Err(rejected("stake amount is zero and the account has no stake"));
            }
            let record = StakeRecord {
                amount: total,
                roles: *roles,
                domains: domains.clone(),
                capabilities: preferences.clone(),
                ticket: id,
                since: previous.map_or(ctx.height, |s| s.since),
            };
            state.set_stake(sender, Some(record));
        }
        TxKind::Unstake { amount } => {
            let mut stake = state.stake(&sender).cloned().ok_or_else(|| rejected("sender has no stake"))?;
            stake.amount = stake.amount.checked_sub(*amount).ok_or_else(|| {
                rejected(format!("unstake of {amount:?} exceeds the stake of {:?}", stake.amount))
            })?;
            let release = ctx.height.saturating_add(state.params.unbonding_blocks);
            let key = (release, sender);
            let pending = state.unbonding.get(&key).copied().unwrap_or_default();
            let pending = pending.checked_add(*amount).ok_or(TxError::Overflow("unbonding"))?;
            state.unbonding.insert(key, pending);
            state.touch(StateKey::Unbonding(release, sender));
            let remaining = (stake.amount > Amount::ZERO).then_some(stake);
            state.set_stake(sender, remaining);
        }
        TxKind::RegisterDomain { spec, bounty } => {
            spec.validate().map_err(|e| rejected(e.to_string()))?;
            if state.domain(&spec.id).is_some() {
                return Err(rejected(format!("domain {:?} is already registered", spec.id)));
            }
            debit(state, sender, *bounty)?;
            state.set_domain(
                spec.id.clone(),
                DomainState {
                    spec: (**spec).clone(),
                    registered_by: sender,
                    registered_at: ctx.height,
                    champion: None,
                    bounty_left: *bounty,
                    stats: DomainStats::default(),
                    federated: None,
                    past_models: Vec::new(),
                    dispute_absent: Vec::new(),
                },
            );
        }
        TxKind::OpenChannel { payee, deposit, expiry_height } => {
            if *payee == sender {
                return Err(rejected("a channel's payee must differ from its payer"));
            }
            if *expiry_height <= ctx.height {
                return Err(rejected(format!(
                    "channel expiry {expiry_height} is not after height {}",
                    ctx.height
                )));
            }
            if *deposit == Amount::ZERO {
                return Err(rejected("channel deposit is zero"));
            }
            debit(state, sender, *deposit)?;
            let channel = Channel {
                payer: sender,
                payee: *payee,
                deposit: *deposit,
                expiry_height: *expiry_height,
                opened_at: ctx.height,
                closing: None,
            };
            state.set_channel(id, Some(channel));
        }
        TxKind::CloseChannel { final_update } => {
            let (channel_id, channel) = channel_for(state, final_update)?;
            if sender == channel.payee {
                let posted = channel.closing.as_ref().map_or(0, |c| c.nonce);
                if final_update.nonce < posted {
                    return Err(rejected("update is older than the one already posted"));
                }
                settle(state, channel_id, &channel, final_update.paid_total)?;
            } else if sender == channel.payer {
                if channel.closing.is_some() {
                    return Err(rejected("channel is already closing"));
                }
                let closing = Closing {
                    nonce: final_update.nonce,
                    paid_total: final_update.paid_total,
                    deadline: ctx.height.saturating_add(state.params.challenge_window_blocks),
                };
                state.set_channel(channel_id, Some(Channel { closing: Some(closing), ..channel }));
            } else {
                return Err(rejected("only the payer or the payee may close a channel"));
            }
        }
        TxKind::ChallengeChannel { newer_update } => {
            let (channel_id, channel) = channel_for(state, newer_update)?;
            if sender != channel.payee {
                return Err(rejected("only the payee may challenge a close"));
            }
            let Some(closing) = &channel.closing else {
                return Err(rejected("channel is not closing"));
            };
            if newer_update.nonce <= closing.nonce {
                return Err(rejected(format!(
                    "challenge nonce {} is not above the posted nonce {}",
                    newer_update.nonce, closing.nonce
                )));
            }
            settle(state, channel_id, &channel, newer_update.paid_total)?;
        }
        TxKind::Anchor { height, block_hash, external_ref } => {
            match state.checkpoints.get(height) {
                Some(h) if h == block_hash => {}
                Some(_) => return Err(rejected(format!("anchor hash differs from checkpoint {height}"))),
                None => {
                    return Err(rejected(format!("height {height} is not a finalized anchor checkpoint")));
                }
            }
            // Validators record anchors (the node that generated the checkpoint's block sends
            // one), once: a second record would only replace who published it and where.
            if state.stake(&sender).is_none() {
                return Err(rejected("only a staked account records anchors"));
            }
            if let Some(first) = state.anchors.get(height) {
                return Err(rejected(format!("checkpoint {height} is already anchored (by {})", first.by)));
            }
            let record = AnchorRecord {
                block_hash: *block_hash,
                external_ref: external_ref.clone(),
                by: sender,
                recorded_at: ctx.height,
            };
            state.anchors.insert(*height, record);
            state.touch(StateKey::Anchor(*height));
        }
        TxKind::FederatedRound { round } => {
            let applied = crate::federated::apply_round(state, sender, round, ctx.height)?;
            paid = applied.paid;
            settled = applied.settled;
        }
        TxKind::FederatedVote { vote } => {
            if let Some(s) = crate::federated::audit::apply_vote(state, sender, vote, ctx.height)? {
                paid = s.paid.clone();
                settled.push(s);
            }
        }
        TxKind::DisputeInference { dispute } => {
            crate::disputes::apply_dispute(state, sender, dispute, ctx.height)?;
        }
        TxKind::DisputeVote { dispute, wrong } => {
            crate::disputes::apply_vote(state, sender, dispute, *wrong, ctx.height)?;
        }
    }
    Ok(TxReceipt { id, weight, burned, tip, paid, settled })
}

fn channel_for(state: &State, update: &ChannelUpdate) -> Result<(Hash, Channel), TxError> {
    let channel = state
        .channel(&update.channel)
        .cloned()
        .ok_or_else(|| rejected(format!("channel {} does not exist", update.channel)))?;
    if update.payer != channel.payer {
        return Err(rejected("update is not signed by the channel's payer"));
    }
    if update.paid_total > channel.deposit {
        return Err(rejected(format!(
            "update pays {:?}, more than the deposit {:?}",
            update.paid_total, channel.deposit
        )));
    }
    Ok((update.channel, channel))
}

/// Pays out a channel: `paid` to the payee, the rest back to the payer.
pub(crate) fn settle(state: &mut State, id: Hash, channel: &Channel, paid: Amount) -> Result<(), TxError> {
    let refund = channel.deposit.checked_sub(paid).ok_or(TxError::Overflow("channel settlement"))?;
    state.credit(channel.payee, paid).ok_or(TxError::Overflow("payee balance"))?;
    state.credit(channel.payer, refund).ok_or(TxError::Overflow("payer balance"))?;
    state.set_channel(id, None);
    Ok(())
}
