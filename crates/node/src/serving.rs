//! The node's inference server: `POST /inference` for the domains it serves (built-in domains
//! with a model, `serve_inference` on), answered from the chain's champion for the domain —
//! only a champion whose model artifact a quorum measured (`model_quality` on chain). The
//! artifact is fetched from its providers once and kept ([`crate::models`]); the answer is
//! computed by the domain's deterministic forward pass on one inference slot (a request waits
//! for it at most [`SLOT_WAIT`], then is told the node is busy), so inference takes at most one
//! core and never the evaluation slots verification runs on. Every answer carries a receipt the
//! node signs over the exact inputs and outputs ([`doin_primitives::InferenceReceipt`]).

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use doin_api::inference::{InferenceApi, ServeError};
use doin_optimize::domain::{Domain, EvalError};
use doin_primitives::{DomainId, InferenceReceiptBody, Keypair, Signed, rows_hash};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::{models::Models, store::SharedStore};

/// How long a request waits for the inference slot.
pub const SLOT_WAIT: Duration = Duration::from_secs(5);

/// What an answer needs from the node.
struct Inner {
    store: SharedStore,
    models: Arc<Models>,
    domains: BTreeMap<String, Arc<dyn Domain>>,
    key: Keypair,
    slot: Semaphore,
}

/// The inference server.
#[derive(Debug, Clone)]
pub struct Serving(Arc<Inner>);

impl Serving {
    /// Serves `domains` (by on-chain id) from the chain in `store`, with models from `models`,
    /// signing receipts with `key`.
    pub fn new(
        store: SharedStore,
        models: Arc<Models>,
        domains: BTreeMap<String, Arc<dyn Domain>>,
        key: Keypair,
    ) -> Self {
        Self(Arc::new(Inner { store, models, domains, key, slot: Semaphore::new(1) }))
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").field("domains", &self.domains.keys().collect::<Vec<_>>()).finish()
    }
}

impl Inner {
    async fn answer(&self, name: String, rows: Vec<Vec<f64>>) -> Result<Value, ServeError> {
        let domain = self.domains.get(&name).cloned().ok_or_else(|| ServeError::NoModel(name.clone()))?;
        let id = DomainId::new(name.as_str()).map_err(|e| ServeError::BadInput(e.to_string()))?;
        let (champion, height) = {
            let store = self.store.lock();
            let tip = store.tip();
            let champion = tip.domain(&id).and_then(|d| d.champion.clone());
            (champion, tip.tip().height)
        };
        let champion =
            champion.ok_or_else(|| ServeError::NoModel(format!("domain {name} has no champion yet")))?;
        let (Some(artifact), Some(quality)) = (champion.artifact, champion.model_quality) else {
            return Err(ServeError::NoModel(format!(
                "the champion {} of {name} has no model a quorum measured",
                champion.commit
            )));
        };
        let bytes = self.models.fetch(artifact).await.map_err(ServeError::Unavailable)?;
        let _slot = tokio::time::timeout(SLOT_WAIT, self.slot.acquire())
            .await
            .map_err(|_| {
                ServeError::Busy(format!("the inference slot stayed busy for {} s", SLOT_WAIT.as_secs()))
            })?
            .map_err(|_| ServeError::Unavailable("the node is stopping".into()))?;
        let inputs = rows_hash(&rows);
        let answer = tokio::task::spawn_blocking(move || domain.infer(&bytes, &rows))
            .await
            .map_err(|e| ServeError::Unavailable(format!("inference panicked: {e}")))?
            .map_err(|e| match e {
                EvalError::BadParams(why) => ServeError::BadInput(why),
                other => ServeError::Unavailable(other.to_string()),
            })?;
        let receipt = Signed::sign(
            InferenceReceiptBody {
                server: self.key.address(),
                domain: id,
                optimae: champion.commit,
                artifact,
                inputs,
                outputs: rows_hash(&answer.outputs),
                height,
                issued_ms: doin_api::now_ms(),
            },
            &self.key,
        );
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
    ) -> Pin<Box<dyn Future<Output = Result<Value, ServeError>> + Send>> {
        let inner = self.0.clone();
        Box::pin(async move { inner.answer(domain, rows).await })
    }
}
