//! The node's inference server: `POST /inference` for the domains it serves (built-in domains
//! with a model, `serve_inference` on), answered from the chain's champion for the domain —
//! only a champion whose model artifact a quorum measured (`model_quality` on chain) — and for
//! the federated jobs it runs, from the job's verified model (the newest round its audit quorum
//! settled, `FederatedState.verified`; [`crate::federated::serve`]). The
//! artifact is fetched from its providers once and kept ([`crate::models`]); the answer is
//! computed by the domain's deterministic forward pass on one inference slot, through a queue
//! with priorities, expiries and batching ([`queue`]), so inference takes at most one core and
//! never the evaluation slots verification runs on. Slow models are asked asynchronously
//! ([`jobs`]). Every answer carries a receipt the node signs over the exact inputs and outputs
//! ([`doin_primitives::InferenceReceipt`]).
//!
//! A domain with an `inference_price` charges per request: the request's channel update is
//! checked before the model runs and taken (and logged) after it answered, so a request that
//! fails is not charged and a payment is never taken twice ([`crate::channels`]).

pub mod jobs;
pub mod queue;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Instant,
};

use doin_api::inference::{Ask, InferenceApi, PaymentRefused, Pending, ServeError};
use doin_consensus::State;
use doin_optimize::domain::Domain;
use doin_primitives::{Amount, DomainId, Hash, InferenceReceiptBody, Keypair, Signed, answers_root};
use serde_json::{Value, json};

use crate::{
    channels::{ChannelBook, Checked, Due, PayError, log::Log},
    federated::Jobs,
    models::Models,
    store::SharedStore,
};

/// A domain served, and its price per request.
#[derive(Clone)]
pub struct Served {
    /// The domain's implementation (its model's forward pass).
    pub domain: Arc<dyn Domain>,
    /// Base units per request (0: free).
    pub price: Amount,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("domain", &self.domain.id()).field("price", &self.price).finish()
    }
}

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
    /// The federated jobs this node runs: their verified models are served too.
    federated: Option<Arc<Jobs>>,
    key: Keypair,
    /// Requests waiting for the inference slot.
    queue: Arc<queue::Queue>,
    /// Asynchronous jobs.
    jobs: Mutex<jobs::Jobs>,
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
    /// Serves `domains` (by on-chain id) and the verified models of `federated`'s jobs from the
    /// chain in `store`, with models from `models`, signing receipts with `key`; the channel
    /// book is replayed from `data_dir`.
    pub fn new(
        store: SharedStore,
        models: Arc<Models>,
        domains: BTreeMap<String, Served>,
        federated: Option<Arc<Jobs>>,
        key: Keypair,
        data_dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        let mut book = ChannelBook::new(key.address());
        let (log, skipped) = Log::open(data_dir, &mut book)?;
        if skipped > 0 {
            tracing::warn!(skipped, "channels.log: unreadable lines skipped");
        }
        let book = Mutex::new((book, log));
        let queue = Arc::new(queue::Queue::default());
        tokio::spawn(queue::work(queue.clone()));
        Ok(Self(Arc::new(Inner {
            store,
            models,
            domains,
            federated,
            key,
            queue,
            jobs: Mutex::new(jobs::Jobs::default()),
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

    /// Takes `price` for work other than an answer (a hire, [`crate::market::hire`]) from
    /// `payment` (a channel update's bytes): checked against the book at the tip, taken and
    /// logged at once, through the same book as paid requests. `None` when `price` is zero.
    pub async fn charge(
        &self,
        payment: Option<Vec<u8>>,
        price: Amount,
    ) -> Result<Option<Value>, PaymentRefused> {
        if price == Amount::ZERO {
            return Ok(None);
        }
        let inner = &self.0;
        let Some(bytes) = payment else { return Err(inner.refusal(&PayError::Required, price, None)) };
        let update = inner.verifier.verify(bytes).await.map_err(|e| inner.refusal(&e, price, None))?;
        let state = inner.store.lock().tip().clone();
        let mut guard = inner.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (book, log) = &mut *guard;
        let checked = match book.check(&state, update.clone(), price) {
            Ok(c) => c,
            Err(e) => return Err(inner.refusal(&e, price, Some((book, &update)))),
        };
        if let Err(e) = book.take(&checked) {
            return Err(inner.refusal(&e, price, Some((book, &update))));
        }
        if let Err(e) = log.taken(&checked.update).and_then(|()| log.sync()) {
            tracing::error!(error = %e, "channels.log: cannot record a payment");
        }
        Ok(Some(json!({
            "channel": checked.update.body.channel.to_string(),
            "nonce": checked.update.body.nonce,
            "paid_total": checked.update.body.paid_total.0.to_string(),
            "charged": checked.adds.0.to_string(),
        })))
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
        ServeError::Payment(Box::new(self.refusal(e, price, held)))
    }

    fn refusal(
        &self,
        e: &PayError,
        price: Amount,
        held: Option<(&ChannelBook, &doin_primitives::ChannelUpdate)>,
    ) -> PaymentRefused {
        let held = held
            .and_then(|(book, u)| book.best(&u.body.channel).filter(|b| b.body.payer == u.body.payer))
            .map(|b| (b.body.nonce, b.body.paid_total.0));
        PaymentRefused {
            error: e.name(),
            detail: e.to_string(),
            price: price.0,
            payee: self.key.address().to_string(),
            held,
        }
    }

    /// How `domain` is served here: a configured domain, or a federated job's model.
    fn served(&self, domain: &str) -> Option<Served> {
        self.domains.get(domain).cloned().or_else(|| self.federated.as_ref().and_then(|j| j.served(domain)))
    }

    /// Checks a request before it queues: the domain served, its champion's measured model,
    /// the payment (nothing taken yet); fetches the model.
    async fn prepare(&self, ask: &Ask) -> Result<Prepared, ServeError> {
        let name = &ask.domain;
        let served = self.served(name).ok_or_else(|| ServeError::NoModel(name.clone()))?;
        let (domain, price) = (served.domain, served.price);
        let id = DomainId::new(name.as_str()).map_err(|e| ServeError::BadInput(e.to_string()))?;
        let (model, height, state) = {
            let store = self.store.lock();
            let tip = store.tip();
            (chain_model(tip, &id), tip.tip().height, tip.clone())
        };
        let model = model?;
        let (artifact, quality) = (model.artifact, model.quality);
        // The payment is checked before the model runs (nothing is taken yet).
        let checked: Option<Checked> = match (price > Amount::ZERO, &ask.payment) {
            (false, _) => None,
            (true, None) => return Err(self.pay_error(&PayError::Required, price, None)),
            (true, Some(bytes)) => {
                let update =
                    self.verifier.verify(bytes.clone()).await.map_err(|e| self.pay_error(&e, price, None))?;
                let book = self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match book.0.check(&state, update.clone(), price) {
                    Ok(c) => Some(c),
                    Err(e) => return Err(self.pay_error(&e, price, Some((&book.0, &update)))),
                }
            }
        };
        let bytes = self.models.fetch(artifact).await.map_err(ServeError::Unavailable)?;
        Ok(Prepared { id, domain, price, model, artifact, quality, height, checked, bytes })
    }

    /// Queues a prepared request: what the worker will answer.
    fn enqueue(
        &self,
        ask: Ask,
        p: &Prepared,
    ) -> Result<tokio::sync::oneshot::Receiver<queue::Outcome>, ServeError> {
        let priority = match (ask.operator, &p.checked) {
            (true, _) => queue::Priority::Operator,
            (false, Some(_)) => queue::Priority::Paid,
            (false, None) => queue::Priority::Free,
        };
        self.queue.push(
            priority,
            Instant::now() + ask.expires_in,
            p.domain.clone(),
            p.artifact,
            p.bytes.clone(),
            ask.rows,
        )
    }

    /// The answer to a request the worker ran: the payment taken (unless another request of
    /// the channel took a newer one meanwhile) and logged, the receipt signed.
    fn finish(&self, p: Prepared, outcome: queue::Outcome) -> Result<Value, ServeError> {
        let (rows, answer) = outcome?;
        #[cfg(feature = "adversary")]
        let answer = if self.lies { wrong_answer(answer) } else { answer };
        let Prepared { id, price, model, artifact, quality, height, checked, domain, .. } = p;
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
        let receipt = sign_receipt(
            &self.key,
            id.clone(),
            (model.optimae, artifact, height),
            &rows,
            &answer.outputs,
            payment,
        );
        Ok(json!({
            "domain_id": id.as_str(),
            "optimae": model.optimae.to_string(),
            "artifact": artifact.to_string(),
            "model_quality": quality,
            "champion_performance": model.performance,
            "federated_round": model.round,
            "height": height,
            "outputs": answer.outputs,
            "predictions": answer.labels,
            "inference_tolerance": domain.inference_tolerance(),
            "receipt": receipt,
            "paid": checked.map(|c| json!({
                "channel": c.update.body.channel.to_string(),
                "nonce": c.update.body.nonce,
                "paid_total": c.update.body.paid_total.0.to_string(),
                "charged": c.adds.0.to_string(),
            })),
        }))
    }

    async fn answer(&self, ask: Ask) -> Result<Value, ServeError> {
        let prepared = self.prepare(&ask).await?;
        let rx = self.enqueue(ask, &prepared)?;
        let outcome = rx.await.map_err(|_| ServeError::Unavailable("the node is stopping".into()))?;
        self.finish(prepared, outcome)
    }

    async fn submit(self: Arc<Self>, ask: Ask) -> Result<Value, ServeError> {
        let prepared = self.prepare(&ask).await?;
        let task_id =
            self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).open(Instant::now())?;
        let rx = match self.enqueue(ask, &prepared) {
            Ok(rx) => rx,
            Err(e) => {
                self.end_job(&task_id, Err(e.clone()));
                return Err(e);
            }
        };
        let (inner, id, domain) = (self.clone(), task_id.clone(), prepared.id.to_string());
        tokio::spawn(async move {
            let outcome = rx.await.map_err(|_| ServeError::Unavailable("the node is stopping".into()));
            let answer = outcome.and_then(|o| inner.finish(prepared, o));
            inner.end_job(&id, answer);
        });
        Ok(json!({ "task_id": task_id, "status": "pending", "domain_id": domain }))
    }

    fn end_job(&self, id: &str, answer: Result<Value, ServeError>) {
        let state = match answer {
            Ok(v) => jobs::JobState::Done(v),
            Err(e) => jobs::JobState::Failed(e),
        };
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).finish(id, state, Instant::now());
    }
}

/// The model the chain says a domain is answered from.
#[derive(Debug, Clone, PartialEq)]
struct ChainModel {
    /// What receipts name as the optimae: the champion's commit; for a federated job, the model
    /// itself (a round has no optimae).
    optimae: Hash,
    artifact: Hash,
    /// The quorum's measurement of the model.
    quality: f64,
    /// The champion's verified performance (a federated job: the model's quality).
    performance: f64,
    /// The federated round that produced it.
    round: Option<u64>,
}

/// The model `id` is answered from on `state`: the champion's, when a quorum measured its
/// artifact; for a federated job, its verified model (never a round still under audit, or one
/// paid unaudited).
fn chain_model(state: &State, id: &DomainId) -> Result<ChainModel, ServeError> {
    let name = id.as_str();
    let d =
        state.domain(id).ok_or_else(|| ServeError::NoModel(format!("domain {name} is not registered")))?;
    if matches!(d.spec.kind, doin_primitives::domain::DomainKind::Federated { .. }) {
        let v = d.federated.as_ref().and_then(|f| f.verified.as_ref()).ok_or_else(|| {
            ServeError::NoModel(format!("federated job {name} has no round its audit quorum verified yet"))
        })?;
        let quality = v.quality_micro as f64 / 1e6;
        return Ok(ChainModel {
            optimae: v.model,
            artifact: v.model,
            quality,
            performance: quality,
            round: Some(v.round),
        });
    }
    let champion = d
        .champion
        .as_ref()
        .ok_or_else(|| ServeError::NoModel(format!("domain {name} has no champion yet")))?;
    let (Some(artifact), Some(quality)) = (champion.artifact, champion.model_quality) else {
        return Err(ServeError::NoModel(format!(
            "the champion {} of {name} has no model a quorum measured",
            champion.commit
        )));
    };
    Ok(ChainModel {
        optimae: champion.commit,
        artifact,
        quality: quality.to_f64(),
        performance: champion.performance.to_f64(),
        round: None,
    })
}

/// A request checked and ready to queue.
struct Prepared {
    id: DomainId,
    domain: Arc<dyn Domain>,
    price: Amount,
    model: ChainModel,
    artifact: Hash,
    quality: f64,
    height: u64,
    checked: Option<Checked>,
    bytes: Arc<Vec<u8>>,
}

impl InferenceApi for Serving {
    fn serves(&self, domain: &str) -> bool {
        self.0.served(domain).is_some()
    }

    fn answer(&self, ask: Ask) -> Pending<Result<Value, ServeError>> {
        let inner = self.0.clone();
        Box::pin(async move { inner.answer(ask).await })
    }

    fn submit(&self, ask: Ask) -> Pending<Result<Value, ServeError>> {
        let inner = self.0.clone();
        Box::pin(async move { inner.submit(ask).await })
    }

    fn job(&self, task_id: &str) -> Option<Value> {
        self.0.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).view(task_id)
    }

    fn prices(&self) -> Value {
        let jobs = self.0.federated.as_ref().map(|j| j.prices()).unwrap_or_default();
        Value::Object(
            self.0
                .domains
                .iter()
                .map(|(d, s)| (d.clone(), s.price))
                .chain(jobs)
                .map(|(d, price)| (d, json!(price.0.to_string())))
                .collect(),
        )
    }

    fn queue(&self) -> Value {
        let st = &self.0.queue.stats;
        let (jobs, jobs_pending) =
            self.0.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).counts();
        json!({
            "waiting": self.0.queue.waiting(),
            "batches": st.batches.load(Ordering::Relaxed),
            "requests": st.requests.load(Ordering::Relaxed),
            "expired": st.expired.load(Ordering::Relaxed),
            "refused": st.refused.load(Ordering::Relaxed),
            "jobs": jobs,
            "jobs_pending": jobs_pending,
        })
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
            "prices": self.prices(),
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
