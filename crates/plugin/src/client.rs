//! A federated contributor as a plugin ([`PluginClient`]): Flower's `NumPyClient` shape —
//! `get_parameters`, `fit`, `evaluate` — over the plugin protocol, so a contributor trains with
//! its own code (PyTorch, NumPy) while `doin fl join` signs and submits what it returns.
//!
//! The job's model is one flat `f32` vector of a fully connected network (`sizes`, inputs
//! first); it crosses the protocol as tensors in the model's order — each layer's weights
//! `[inputs, outputs]` (row-major: input-major, as the flat vector holds them), then its biases
//! `[outputs]` — each `{"shape": [..], "data": [..]}`. Replies are checked before anything is
//! signed: the tensor count, every element count, finiteness.

use serde_json::{Value as Json, json};

use crate::host::{PluginError, PluginHost, PluginSpec};

/// The shapes of the tensors of a network with layer `sizes`.
pub fn shapes(sizes: &[usize]) -> Vec<Vec<usize>> {
    sizes.windows(2).flat_map(|w| [vec![w[0], w[1]], vec![w[1]]]).collect()
}

/// The flat vector as protocol tensors of `shapes`.
fn tensors(flat: &[f32], shapes: &[Vec<usize>]) -> Json {
    let mut at = 0;
    Json::Array(
        shapes
            .iter()
            .map(|s| {
                let n: usize = s.iter().product();
                let t = json!({ "shape": s, "data": &flat[at..at + n] });
                at += n;
                t
            })
            .collect(),
    )
}

/// Protocol tensors back into one flat vector, each checked against `shapes`.
pub fn flatten(reply: &Json, shapes: &[Vec<usize>]) -> Result<Vec<f32>, String> {
    let list = reply.as_array().ok_or("`parameters` is not a list of tensors")?;
    if list.len() != shapes.len() {
        return Err(format!("{} tensors, the job's model has {}", list.len(), shapes.len()));
    }
    let mut flat = Vec::with_capacity(shapes.iter().map(|s| s.iter().product::<usize>()).sum());
    for (i, (t, shape)) in list.iter().zip(shapes).enumerate() {
        let data = t.get("data").and_then(Json::as_array).ok_or(format!("tensor {i} has no `data`"))?;
        let want: usize = shape.iter().product();
        if data.len() != want {
            return Err(format!("tensor {i} has {} values, the job's {shape:?} has {want}", data.len()));
        }
        for (j, v) in data.iter().enumerate() {
            let x = v.as_f64().map(|x| x as f32).filter(|x| x.is_finite());
            flat.push(x.ok_or(format!("tensor {i} value {j} is not a finite number"))?);
        }
    }
    Ok(flat)
}

/// What `fit` returned: the trained parameters (flat), the examples it trained on, its metrics.
#[derive(Clone, Debug)]
pub struct Fit {
    pub weights: Vec<f32>,
    pub examples: u64,
    pub metrics: Json,
}

/// What `evaluate` returned.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub loss: f64,
    pub examples: u64,
    pub metrics: Json,
}

/// Why a contributor plugin's call gave nothing to sign.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The process failed (or answered with its own error).
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// It answered, with something that is not a usable reply (nothing is signed).
    #[error("plugin {plugin}: `{method}` returned {reason}")]
    Reply {
        /// Plugin name.
        plugin: String,
        /// The method called.
        method: String,
        /// What was wrong.
        reason: String,
    },
}

/// A supervised contributor plugin.
#[derive(Debug)]
pub struct PluginClient {
    host: PluginHost,
}

impl PluginClient {
    /// Starts the plugin (its handshake must say `role: client`).
    pub fn start(spec: PluginSpec, job: &str) -> Result<Self, ClientError> {
        let params = json!({
            "protocol": crate::PROTOCOL_VERSION,
            "role": "client",
            "config": { "job": job },
        });
        let host = PluginHost::start(spec, params)?;
        let role = host.handshake().and_then(|h| h.get("role")).and_then(Json::as_str).unwrap_or("");
        if role != "client" {
            return Err(PluginError::Handshake {
                plugin: host.name().to_owned(),
                reason: format!("role {role:?}: a contributor plugin subclasses doin_plugin.Client"),
            }
            .into());
        }
        Ok(Self { host })
    }

    fn malformed(&self, method: &str, reason: String) -> ClientError {
        ClientError::Reply { plugin: self.host.name().to_owned(), method: method.into(), reason }
    }

    /// The plugin's own parameters, checked against a network of `sizes` (before registering
    /// a contributor whose model does not fit the job).
    pub fn check_shapes(&mut self, sizes: &[usize]) -> Result<(), ClientError> {
        let reply = self.host.call("get_parameters", json!({ "config": { "sizes": sizes } }))?;
        let shapes = shapes(sizes);
        let got = reply.get("parameters").and_then(Json::as_array).cloned().unwrap_or_default();
        let theirs: Vec<Json> = got.iter().map(|t| t.get("shape").cloned().unwrap_or(Json::Null)).collect();
        let ours: Vec<Json> = shapes.iter().map(|s| json!(s)).collect();
        if theirs != ours {
            let (theirs, ours) = (Json::Array(theirs), Json::Array(ours));
            return Err(self.malformed(
                "get_parameters",
                format!("tensor shapes {theirs}, the job's model {sizes:?} has {ours}"),
            ));
        }
        Ok(())
    }

    /// Trains from the global model `weights`; `config` is passed through (round, lr, …).
    pub fn fit(&mut self, weights: &[f32], sizes: &[usize], config: Json) -> Result<Fit, ClientError> {
        let shapes = shapes(sizes);
        let reply =
            self.host.call("fit", json!({ "parameters": tensors(weights, &shapes), "config": config }))?;
        let weights = flatten(reply.get("parameters").unwrap_or(&Json::Null), &shapes)
            .map_err(|r| self.malformed("fit", r))?;
        let examples = reply
            .get("num_examples")
            .and_then(Json::as_u64)
            .filter(|n| *n > 0)
            .ok_or_else(|| self.malformed("fit", "`num_examples` is not a positive integer".into()))?;
        Ok(Fit { weights, examples, metrics: reply.get("metrics").cloned().unwrap_or(Json::Null) })
    }

    /// Measures `weights` on the plugin's local data.
    pub fn evaluate(
        &mut self,
        weights: &[f32],
        sizes: &[usize],
        config: Json,
    ) -> Result<Evaluation, ClientError> {
        let shapes = shapes(sizes);
        let reply = self
            .host
            .call("evaluate", json!({ "parameters": tensors(weights, &shapes), "config": config }))?;
        let loss = reply
            .get("loss")
            .and_then(Json::as_f64)
            .filter(|l| l.is_finite())
            .ok_or_else(|| self.malformed("evaluate", "`loss` is not a finite number".into()))?;
        Ok(Evaluation {
            loss,
            examples: reply.get("num_examples").and_then(Json::as_u64).unwrap_or(0),
            metrics: reply.get("metrics").cloned().unwrap_or(Json::Null),
        })
    }

    /// Asks the plugin to exit.
    pub fn shutdown(&mut self) {
        self.host.shutdown();
    }
}
