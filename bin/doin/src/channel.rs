//! `doin channel open|pay|status|close`: the payer's side of payment channels (and the payee's
//! close). A payer opens a channel on chain with a deposit to a serving node; each paid request
//! then carries a signed cumulative update (`x-doin-payment`). The payer's updates are kept in
//! `KEY.channels.json` beside its key (the nonce and total of the last update signed per
//! channel), so a later `pay` or `doin infer --channel` goes on from there.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use clap::Subcommand;
use doin_primitives::{Amount, ChannelUpdate, ChannelUpdateBody, Hash, Keypair, Signed, TxKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::wallet::{NodeUrl, address, get, http_with, key_of, parse_amount, submit_tx};

#[derive(Debug, Subcommand)]
pub(crate) enum Channel {
    /// Opens a channel to a payee (a serving node's address) with a deposit; prints its id.
    Open {
        #[command(flatten)]
        node: NodeUrl,
        /// The payer's key file.
        #[arg(long)]
        key: PathBuf,
        /// The payee's address (hex; `payee` in a `402` answer).
        #[arg(long)]
        payee: String,
        /// Deposit in DOIN.
        #[arg(long)]
        deposit: String,
        /// Blocks until the channel expires.
        #[arg(long, default_value_t = 10_000)]
        blocks: u64,
    },
    /// Signs the next update adding `amount` to the channel's total; prints it with the header
    /// value to send (`x-doin-payment`).
    Pay {
        /// The payer's key file.
        #[arg(long)]
        key: PathBuf,
        /// The channel id.
        #[arg(long)]
        channel: String,
        /// DOIN to add.
        #[arg(long)]
        amount: String,
    },
    /// The channel on chain, and the last update this payer signed.
    Status {
        #[command(flatten)]
        node: NodeUrl,
        /// The channel id.
        #[arg(long)]
        channel: String,
        /// The payer's key file (to show its last update).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Closes a channel: as its payer (`--key`: posts the last update signed; the payee may
    /// answer with a newer one within the challenge window) or as its payee's operator
    /// (`--api-key`: the node closes with the best update it holds, settled at once).
    Close {
        #[command(flatten)]
        node: NodeUrl,
        /// The channel id.
        #[arg(long)]
        channel: String,
        /// The payer's key file.
        #[arg(long, conflicts_with = "api_key")]
        key: Option<PathBuf>,
        /// The payee node's API key.
        #[arg(long)]
        api_key: Option<String>,
    },
}

/// The last update a payer signed for one channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Sent {
    /// Its nonce.
    pub nonce: u64,
    /// Its cumulative total (base units, decimal).
    pub paid_total: String,
}

/// The payer's record of its channels (`KEY.channels.json`).
pub(crate) struct Payer {
    key: Keypair,
    path: PathBuf,
    sent: BTreeMap<String, Sent>,
}

impl Payer {
    /// The payer of `key_path`, its record read.
    pub(crate) fn open(key_path: &Path) -> anyhow::Result<Self> {
        let key = key_of(key_path)?;
        let path = PathBuf::from(format!("{}.channels.json", key_path.display()));
        let sent = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{} is not a channel record", path.display()))?,
            Err(_) => BTreeMap::new(),
        };
        Ok(Self { key, path, sent })
    }

    /// The last update signed for `channel`.
    pub(crate) fn last(&self, channel: &Hash) -> Sent {
        self.sent
            .get(&channel.to_string())
            .cloned()
            .unwrap_or_else(|| Sent { nonce: 0, paid_total: "0".into() })
    }

    /// Signs the next update of `channel` adding `amount`, and records it (written before the
    /// update is returned, so a crash never reuses a nonce).
    pub(crate) fn pay(&mut self, channel: Hash, amount: Amount) -> anyhow::Result<ChannelUpdate> {
        let last = self.last(&channel);
        let total = Amount(last.paid_total.parse::<u128>().unwrap_or(0))
            .checked_add(amount)
            .context("total overflows")?;
        let body = ChannelUpdateBody {
            channel,
            payer: self.key.address(),
            nonce: last.nonce + 1,
            paid_total: total,
        };
        self.sent.insert(channel.to_string(), Sent { nonce: body.nonce, paid_total: total.0.to_string() });
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.sent)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(Signed::sign(body, &self.key))
    }

    /// Goes on from the update the payee holds (`nonce`, `paid_total`) when it is ahead of this
    /// record (the record was lost or restored from an older copy); false if it is not ahead.
    pub(crate) fn resume(&mut self, channel: Hash, nonce: u64, paid_total: u128) -> anyhow::Result<bool> {
        if nonce <= self.last(&channel).nonce {
            return Ok(false);
        }
        self.sent.insert(channel.to_string(), Sent { nonce, paid_total: paid_total.to_string() });
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.sent)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(true)
    }

    /// The update last signed for `channel`, signed again (the same content).
    fn latest(&self, channel: Hash) -> Option<ChannelUpdate> {
        let last = self.sent.get(&channel.to_string())?;
        let body = ChannelUpdateBody {
            channel,
            payer: self.key.address(),
            nonce: last.nonce,
            paid_total: Amount(last.paid_total.parse().ok()?),
        };
        Some(Signed::sign(body, &self.key))
    }
}

/// The header value of an update.
pub(crate) fn header(update: &ChannelUpdate) -> String {
    hex::encode(doin_primitives::encode(update))
}

pub(crate) fn parse_channel(text: &str) -> anyhow::Result<Hash> {
    text.parse().with_context(|| format!("channel {text:?} is not a 32-byte hex id"))
}

pub(crate) fn run(c: Channel) -> anyhow::Result<()> {
    match c {
        Channel::Open { node, key, payee, deposit, blocks } => {
            let k = key_of(&key)?;
            let height = get(&node.node, "/chain/status")?["tip_index"].as_u64().context("chain height")?;
            let kind = TxKind::OpenChannel {
                payee: address(&payee)?,
                deposit: parse_amount(&deposit)?,
                expiry_height: height + blocks.max(1),
            };
            let (id, nonce) = submit_tx(&node.node, &k, kind)?;
            println!(
                "{}",
                json!({ "channel": id.to_string(), "expiry_height": height + blocks.max(1), "nonce": nonce })
            );
        }
        Channel::Pay { key, channel, amount } => {
            let mut payer = Payer::open(&key)?;
            let u = payer.pay(parse_channel(&channel)?, parse_amount(&amount)?)?;
            println!(
                "{}",
                json!({ "channel": channel, "nonce": u.body.nonce, "paid_total": u.body.paid_total.0.to_string(), "header": header(&u) })
            );
        }
        Channel::Status { node, channel, key } => {
            let id = parse_channel(&channel)?;
            let (code, on_chain) = http_with(&node.node, "GET", &format!("/channels/{id}"), None, &[])?;
            let last = key.map(|k| Payer::open(&k).map(|p| p.last(&id))).transpose()?;
            println!(
                "{}",
                json!({ "channel": id.to_string(), "open": code == 200, "on_chain": (code == 200).then_some(on_chain), "last_signed": last })
            );
        }
        Channel::Close { node, channel, key, api_key } => {
            let id = parse_channel(&channel)?;
            match (key, api_key) {
                (Some(k), None) => {
                    let payer = Payer::open(&k)?;
                    let update = payer.latest(id).with_context(|| {
                        format!("this payer signed no update for channel {id}: nothing to close with")
                    })?;
                    let (tx, _) =
                        submit_tx(&node.node, &payer.key, TxKind::CloseChannel { final_update: update })?;
                    println!(
                        "{}",
                        json!({ "channel": id.to_string(), "closing_tx": tx.to_string(), "as": "payer" })
                    );
                }
                (None, Some(api)) => {
                    let (code, v) = http_with(
                        &node.node,
                        "POST",
                        &format!("/api/channel/{id}/close"),
                        Some("{}"),
                        &[("x-api-key", &api)],
                    )?;
                    if code != 202 {
                        bail!("the node refused (HTTP {code}): {v}");
                    }
                    println!("{}", json!({ "channel": id.to_string(), "as": "payee", "node": v }));
                }
                _ => bail!("give --key (the payer) or --api-key (the payee's node)"),
            }
        }
    }
    Ok(())
}
