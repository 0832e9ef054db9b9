//! The node's inference server: `POST /inference` for the domains it serves (built-in domains
//! with a model, `serve_inference` on), answered from the chain's champion for the domain —
//! only a champion whose model artifact a quorum measured (`model_quality` on chain). The
//! artifact is fetched from its providers once and kept ([`crate::models`]); the answer is
//! computed by the domain's deterministic forward pass on one inference slot (a request waits
//! for it at most [`SLOT_WAIT`], then is told the node is busy), so inference takes at most one
//! core and never the evaluation slots verification runs on. Every answer carries a receipt the
//! node signs over the exact inputs and outputs ([`doin_primitives::InferenceReceipt`]).
//!
//! A domain with an `inference_price` charges per request: the request's channel update is
//! checked before the model runs and taken (and logged) after it answered, so a request that
//! fails is not charged and a payment is never taken twice ([`crate::channels`]).

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use doin_api::inference::{InferenceApi, ServeError};
use doin_consensus::State;
use doin_optimize::domain::{Domain, EvalError};
use doin_primitives::{Amount, DomainId, Hash, InferenceReceiptBody, Keypair, Signed, answers_root};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::{
    channels::{ChannelBook, Checked, Due, PayError, log::Log},
    models::Models,
    store::SharedStore,
};

/// A domain served, and its price per request.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Served {
    /// The domain's implementation (its model's forward pass).
    pub domain: Arc<dyn Domain>,
    /// Base units per request (0: free).
    pub price: Amount,
}

/// How long a request waits for the inference slot.
pub const SLOT_WAIT: Duration = Duration::from_secs(5);

/// The receipt of an answer: `model` is (optimae, artifact, height); `inputs` the rows asked,
/// `outputs` the rows answered; `payment` the id of the update that paid.
pub fn sign_receipt(
    key: &Keypair,
    domain: DomainId,
    model: (Hash, Hash, u64),
    inputs: &[Vec<f64>],
    outputs: &[Vec<f64>],
    payment: Option<Hash>,
) -> doin_primitives::InferenceReceipt {
    let (optimae, artifact, height) = model;
    Signed::sign(
        InferenceReceiptBody {
            server: key.address(),
            domain,
            optimae,
            artifact,
            rows: u32::try_from(inputs.len()).unwrap_or(u32::MAX),
            answers: answers_root(inputs, outputs),
            height,
            issued_ms: doin_api::now_ms(),
            payment,
        },
        key,
    )
}

/// Test builds' lying server: the two largest outputs of every row swapped (and the labels
/// following them), the receipt then signed over these outputs.
#[cfg(feature = "adversary")]
fn wrong_answer(mut a: doin_optimize::domain::Inference) -> doin_optimize::domain::Inference {
    for (r, row) in a.outputs.iter_mut().enumerate() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|x, y| row[*y].total_cmp(&row[*x]));
        if let [first, second, ..] = order[..] {
            row.swap(first, second);
            if let Some(l) = a.labels.as_mut().and_then(|l| l.get_mut(r)) {
                *l = second as u32;
            }
        }
    }
    a
}

/// What an answer needs from the node.
struct Inner {
    store: SharedStore,
    models: Arc<Models>,
    domains: BTreeMap<String, Served>,
    key: Keypair,
    slot: Semaphore,
    /// The channels paying this node, and their log.
    book: Mutex<(ChannelBook, Log)>,
    /// The tip height the book was last looked at for.
    looked_at: std::sync::atomic::AtomicU64,
    /// Payments' signatures, checked in batches.
    verifier: crate::channels::verify::Verifier,
    /// Test builds: answer wrongly ([`crate::Adversary::WrongAnswers`]).
    #[cfg(feature = "adversary")]
    lies: bool,
}

/// The inference server.
#[derive(Debug, Clone)]
pub struct Serving(Arc<Inner>);

impl Serving {
    /// Serves `domains` (by on-chain id) from the chain in `store`, with models from `models`,
    /// signing receipts with `key`; the channel book is replayed from `data_dir`.
    pub fn new(
        store: SharedStore,
        models: Arc<Models>,
        domains: BTreeMap<String, Served>,
        key: Keypair,
        data_dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        let mut book = ChannelBook::new(key.address());
        let (log, skipped) = Log::open(data_dir, &mut book)?;
        if skipped > 0 {
            tracing::warn!(skipped, "channels.log: unreadable lines skipped");
        }
        let book = Mutex::new((book, log));
        Ok(Self(Arc::new(Inner {
            store,
            models,
            domains,
            key,
            slot: Semaphore::new(1),
            book,
            looked_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            verifier: crate::channels::verify::Verifier::start(),
            #[cfg(feature = "adversary")]
            lies: false,
        })))
    }

    /// Test builds: this server answers wrongly.
    #[cfg(feature = "adversary")]
    pub fn lying(self) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(inner) => Self(Arc::new(Inner { lies: true, ..inner })),
            Err(shared) => Self(shared),
        }
    }

    /// What the channel book asks to send at the tip `state`; settled channels are logged.
    pub fn channels_due(&self, state: &State) -> Vec<Due> {
        let height = state.tip().height;
        if self.0.looked_at.swap(height, std::sync::atomic::Ordering::Relaxed) == height {
            return Vec::new();
        }
        let mut guard = self.0.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (book, log) = &mut *guard;
        let (due, gone) = book.due(state, height);
        for (channel, paid) in gone {
            tracing::info!(%channel, paid = paid.0, "payment channel settled");
            if let Err(e) = log.settled(&channel, paid) {
                tracing::error!(error = %e, "channels.log: cannot record a settled channel");
            }
        }
        if let Err(e) = log.sync() {
            tracing::error!(error = %e, "channels.log: cannot sync");
        }
        due
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").field("domains", &self.domains.keys().collect::<Vec<_>>()).finish()
    }
}

impl Inner {
    /// A refused payment; `book` and `update` add the best update held for the update's channel
    /// (when the update is the channel payer's, signature checked).
    fn pay_error(
        &self,
        e: &PayError,
        price: Amount,
        held: Option<(&ChannelBook, &doin_primitives::ChannelUpdate)>,
    ) -> ServeError {
        let held = held
            .and_then(|(book, u)| book.best(&u.body.channel).filter(|b| b.body.payer == u.body.payer))
            .map(|b| (b.body.nonce, b.body.paid_total.0));
        ServeError::Payment {
            error: e.name(),
            detail: e.to_string(),
            price: price.0,
            payee: self.key.address().to_string(),
            held,
        }
    }

    async fn answer(
        &self,
        name: String,
        rows: Vec<Vec<f64>>,
        payment: Option<Vec<u8>>,
    ) -> Result<Value, ServeError> {
        let served = self.domains.get(&name).cloned().ok_or_else(|| ServeError::NoModel(name.clone()))?;
        let (domain, price) = (served.domain, served.price);
        let id = DomainId::new(name.as_str()).map_err(|e| ServeError::BadInput(e.to_string()))?;
        let (champion, height, state) = {
            let store = self.store.lock();
            let tip = store.tip();
            let champion = tip.domain(&id).and_then(|d| d.champion.clone());
            (champion, tip.tip().height, tip.clone())
        };
        let champion =
            champion.ok_or_else(|| ServeError::NoModel(format!("domain {name} has no champion yet")))?;
        let (Some(artifact), Some(quality)) = (champion.artifact, champion.model_quality) else {
            return Err(ServeError::NoModel(format!(
                "the champion {} of {name} has no model a quorum measured",
                champion.commit
            )));
        };
        // The payment is checked before the model runs (nothing is taken yet).
        let checked: Option<Checked> = match (price > Amount::ZERO, payment) {
            (false, _) => None,
            (true, None) => return Err(self.pay_error(&PayError::Required, price, None)),
            (true, Some(bytes)) => {
                let update =
                    self.verifier.verify(bytes).await.map_err(|e| self.pay_error(&e, price, None))?;
                let book = self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match book.0.check(&state, update.clone(), price) {
                    Ok(c) => Some(c),
                    Err(e) => return Err(self.pay_error(&e, price, Some((&book.0, &update)))),
                }
            }
        };
        let bytes = self.models.fetch(artifact).await.map_err(ServeError::Unavailable)?;
        let _slot = tokio::time::timeout(SLOT_WAIT, self.slot.acquire())
            .await
            .map_err(|_| {
                ServeError::Busy(format!("the inference slot stayed busy for {} s", SLOT_WAIT.as_secs()))
            })?
            .map_err(|_| ServeError::Unavailable("the node is stopping".into()))?;
        #[cfg(feature = "adversary")]
        let lies = self.lies;
        let (rows, answer) = tokio::task::spawn_blocking(move || {
            let answer = domain.infer(&bytes, &rows);
            (rows, answer)
        })
        .await
        .map_err(|e| ServeError::Unavailable(format!("inference panicked: {e}")))?;
        let answer = answer.map_err(|e| match e {
            EvalError::BadParams(why) => ServeError::BadInput(why),
            other => ServeError::Unavailable(other.to_string()),
        })?;
        #[cfg(feature = "adversary")]
        let answer = if lies { wrong_answer(answer) } else { answer };
        // Answered: the payment is taken (unless another request of the channel took a newer
        // one meanwhile) and logged before the answer leaves.
        let payment = match &checked {
            None => None,
            Some(c) => {
                let mut guard = self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (book, log) = &mut *guard;
                if let Err(e) = book.take(c) {
                    return Err(self.pay_error(&e, price, Some((book, &c.update))));
                }
                if let Err(e) = log.taken(&c.update) {
                    tracing::error!(error = %e, "channels.log: cannot record a payment");
                }
                Some(c.update.id())
            }
        };
        let receipt =
            sign_receipt(&self.key, id, (champion.commit, artifact, height), &rows, &answer.outputs, payment);
        Ok(json!({
            "domain_id": name,
            "optimae": champion.commit.to_string(),
            "artifact": artifact.to_string(),
            "model_quality": quality.to_f64(),
            "champion_performance": champion.performance.to_f64(),
            "height": height,
            "outputs": answer.outputs,
            "predictions": answer.labels,
            "receipt": receipt,
            "paid": checked.map(|c| json!({
                "channel": c.update.body.channel.to_string(),
                "nonce": c.update.body.nonce,
                "paid_total": c.update.body.paid_total.0.to_string(),
                "charged": c.adds.0.to_string(),
            })),
        }))
    }
}

impl InferenceApi for Serving {
    fn serves(&self, domain: &str) -> bool {
        self.0.domains.contains_key(domain)
    }

    fn answer(
        &self,
        domain: String,
        rows: Vec<Vec<f64>>,
        payment: Option<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ServeError>> + Send>> {
        let inner = self.0.clone();
        Box::pin(async move { inner.answer(domain, rows, payment).await })
    }

    fn model(&self, hash: &Hash) -> Option<Arc<Vec<u8>>> {
        self.0.models.get(hash)
    }

    fn channels(&self) -> Value {
        let state = self.0.store.lock().tip().clone();
        let guard = self.0.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let book = &guard.0;
        let mut open: Vec<Value> = state
            .channels()
            .filter(|(_, c)| c.payee == self.0.key.address())
            .map(|(id, c)| {
                let best = book.best(id);
                json!({
                    "channel": id.to_string(),
                    "payer": c.payer.to_string(),
                    "deposit": c.deposit.0.to_string(),
                    "expiry_height": c.expiry_height,
                    "opened_at": c.opened_at,
                    "closing": c.closing.as_ref().map(|cl| json!({
                        "nonce": cl.nonce,
                        "paid_total": cl.paid_total.0.to_string(),
                        "deadline": cl.deadline,
                    })),
                    "best_nonce": best.map_or(0, |u| u.body.nonce),
                    "paid_total": best.map_or(Amount::ZERO, |u| u.body.paid_total).0.to_string(),
                })
            })
            .collect();
        open.truncate(1000);
        let (earned_open, earned_settled, _) = book.earnings();
        json!({
            "payee": self.0.key.address().to_string(),
            "prices": self.0.domains.iter().map(|(d, s)| (d.clone(), json!(s.price.0.to_string()))).collect::<serde_json::Map<_, _>>(),
            "channels": open,
            "earned_open": earned_open.0.to_string(),
            "earned_settled": earned_settled.0.to_string(),
            "settled": book.settled().len(),
        })
    }

    fn close_channel(&self, channel: &str) -> Result<Value, String> {
        let id: Hash = channel.parse().map_err(|_| format!("{channel:?} is not a channel id"))?;
        let mut guard = self.0.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !guard.0.request_close(&id) {
            return Err(format!("no payment through channel {id} is held here"));
        }
        let best = guard.0.best(&id).map(|u| (u.body.nonce, u.body.paid_total.0));
        Ok(
            json!({ "channel": id.to_string(), "closing_with": best.map(|(n, p)| json!({ "nonce": n, "paid_total": p.to_string() })) }),
        )
    }
}
