//! Plugins as the engine's own traits: [`PluginOptimizer`] is an [`Optimizer`], [`PluginDomain`]
//! is a [`Domain`]. Parameters cross the protocol as arrays of numbers in the space's own units
//! (reals, integers, category indices); the engine's unit cube stays on this side.

use std::{sync::Mutex, time::Instant};

use doin_optimize::{
    Dim, Evaluated, Optimizer, SnapshotError, Space, Value,
    domain::{Budget, Domain, EvalError, Inference, Measurement},
};
use doin_primitives::Hash;
use serde_json::{Value as Json, json};

use crate::host::{PluginError, PluginHost, PluginSpec};

/// The JSON form of a space: `[{"kind": "float"|"log"|"int"|"categorical", …}]`.
pub fn space_to_json(space: &Space) -> Json {
    Json::Array(
        space
            .dims
            .iter()
            .map(|d| match *d {
                Dim::Continuous { lo, hi } => json!({ "kind": "float", "low": lo, "high": hi }),
                Dim::Log { lo, hi } => json!({ "kind": "log", "low": lo, "high": hi }),
                Dim::Integer { lo, hi } => json!({ "kind": "int", "low": lo, "high": hi }),
                Dim::Categorical { n } => json!({ "kind": "categorical", "choices": n }),
            })
            .collect(),
    )
}

/// Parses the JSON form of a space, naming the first bad entry.
pub fn space_from_json(v: &Json) -> Result<Space, String> {
    let items = v.as_array().ok_or("`space` must be an array")?;
    if items.is_empty() || items.len() > 10_000 {
        return Err(format!("`space` has {} dimensions (1..=10000 allowed)", items.len()));
    }
    let mut dims = Vec::with_capacity(items.len());
    for (i, d) in items.iter().enumerate() {
        let kind = d.get("kind").and_then(Json::as_str).unwrap_or("float");
        let f = |k: &str| {
            d.get(k).and_then(Json::as_f64).ok_or(format!("space[{i}]: `{k}` missing or not a number"))
        };
        let dim = match kind {
            "float" => Dim::Continuous { lo: f("low")?, hi: f("high")? },
            "log" => Dim::Log { lo: f("low")?, hi: f("high")? },
            "int" => Dim::Integer { lo: f("low")? as i64, hi: f("high")? as i64 },
            "categorical" => {
                let n = d
                    .get("choices")
                    .and_then(Json::as_u64)
                    .ok_or(format!("space[{i}]: `choices` missing"))?;
                Dim::Categorical { n: n as usize }
            }
            other => return Err(format!("space[{i}]: unknown kind {other:?}")),
        };
        let ok = match dim {
            Dim::Continuous { lo, hi } => lo.is_finite() && hi.is_finite() && lo < hi,
            Dim::Log { lo, hi } => lo > 0.0 && hi.is_finite() && lo < hi,
            Dim::Integer { lo, hi } => lo <= hi,
            Dim::Categorical { n } => n >= 1,
        };
        if !ok {
            return Err(format!("space[{i}]: empty or invalid range"));
        }
        dims.push(dim);
    }
    Ok(Space { dims })
}

/// The parameters' names in the JSON form of a space (each entry's optional `name`; `p{i}` when
/// absent), refusing empty, overlong or repeated names.
pub fn names_from_json(v: &Json) -> Result<Vec<String>, String> {
    let items = v.as_array().ok_or("`space` must be an array")?;
    let mut names = Vec::with_capacity(items.len());
    for (i, d) in items.iter().enumerate() {
        let name = match d.get("name") {
            None | Some(Json::Null) => format!("p{i}"),
            Some(Json::String(n)) if !n.is_empty() && n.len() <= 64 => n.clone(),
            Some(other) => {
                return Err(format!("space[{i}]: `name` {other} is not a string of 1 to 64 bytes"));
            }
        };
        if names.contains(&name) {
            return Err(format!("space[{i}]: the name {name:?} is used twice"));
        }
        names.push(name);
    }
    Ok(names)
}

/// Values as protocol numbers.
pub fn values_to_json(values: &[Value]) -> Json {
    Json::Array(
        values
            .iter()
            .map(|v| match *v {
                Value::Real(r) => json!(r),
                Value::Int(i) => json!(i),
                Value::Choice(c) => json!(c),
            })
            .collect(),
    )
}

/// Protocol numbers as values of `space`, checked against its bounds.
pub fn values_from_json(space: &Space, v: &Json) -> Result<Vec<Value>, String> {
    let items = v.as_array().ok_or("parameters must be an array of numbers")?;
    if items.len() != space.len() {
        return Err(format!("{} parameters, the space has {}", items.len(), space.len()));
    }
    space
        .dims
        .iter()
        .zip(items)
        .enumerate()
        .map(|(i, (d, x))| {
            let x = x
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or(format!("parameter {i} is not a finite number"))?;
            let out_of = |lo: f64, hi: f64| format!("parameter {i} = {x} outside [{lo}, {hi}]");
            Ok(match *d {
                Dim::Continuous { lo, hi } | Dim::Log { lo, hi } => {
                    if x < lo || x > hi {
                        return Err(out_of(lo, hi));
                    }
                    Value::Real(x)
                }
                Dim::Integer { lo, hi } => {
                    let r = x.round() as i64;
                    if r < lo || r > hi {
                        return Err(out_of(lo as f64, hi as f64));
                    }
                    Value::Int(r)
                }
                Dim::Categorical { n } => {
                    let r = x.round();
                    if r < 0.0 || r as usize >= n {
                        return Err(out_of(0.0, n as f64 - 1.0));
                    }
                    Value::Choice(r as usize)
                }
            })
        })
        .collect()
}

/// An optimizer run by a plugin process. Plugin failures never panic the engine: `ask`
/// returns no candidates and the error is kept in [`PluginOptimizer::last_error`].
#[derive(Debug)]
pub struct PluginOptimizer {
    host: Mutex<PluginHost>,
    space: Space,
    best: Option<Evaluated>,
    last_error: Option<PluginError>,
}

impl PluginOptimizer {
    /// Starts the plugin and configures it for `space` with the user's `optimization_config`.
    pub fn start(spec: PluginSpec, space: Space, config: Json, seed: u64) -> Result<Self, PluginError> {
        let params = json!({
            "protocol": crate::PROTOCOL_VERSION,
            "role": "optimizer",
            "space": space_to_json(&space),
            "config": config,
            "seed": seed,
        });
        let host = Mutex::new(PluginHost::start(spec, params)?);
        Ok(Self { host, space, best: None, last_error: None })
    }

    /// Runs `f` with the supervised process.
    pub fn with_host<R>(&self, f: impl FnOnce(&mut PluginHost) -> R) -> Option<R> {
        self.host.lock().ok().map(|mut h| f(&mut h))
    }

    /// The last error, if any call failed.
    pub fn last_error(&self) -> Option<&PluginError> {
        self.last_error.as_ref()
    }

    fn call(&mut self, method: &str, params: Json) -> Option<Json> {
        let result = match self.host.get_mut() {
            Ok(h) => h.call(method, params),
            Err(_) => return None,
        };
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(method, error = %e, "optimizer plugin call failed");
                self.last_error = Some(e);
                None
            }
        }
    }

    fn bad_reply(&mut self, method: &str, reason: String) {
        let plugin = self.with_host(|h| h.name().to_owned()).unwrap_or_default();
        let e = PluginError::Malformed { plugin, method: method.into(), reason };
        tracing::warn!(error = %e, "optimizer plugin reply rejected");
        self.last_error = Some(e);
    }
}

impl Optimizer for PluginOptimizer {
    fn ask(&mut self, n: usize) -> Vec<Vec<f64>> {
        let Some(reply) = self.call("ask", json!({ "n": n })) else { return Vec::new() };
        let Some(list) = reply.get("candidates").and_then(Json::as_array) else {
            self.bad_reply("ask", "no `candidates` array".into());
            return Vec::new();
        };
        if list.len() > n {
            self.bad_reply("ask", format!("{} candidates, {n} asked", list.len()));
            return Vec::new();
        }
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            match values_from_json(&self.space, c) {
                Ok(v) => out.push(self.space.encode(&v)),
                Err(reason) => {
                    self.bad_reply("ask", reason);
                    return Vec::new();
                }
            }
        }
        out
    }

    fn tell(&mut self, results: &[Evaluated]) {
        let items: Vec<Json> = results
            .iter()
            .map(|r| {
                let loss = if r.loss.is_finite() { json!(r.loss) } else { Json::Null };
                json!({ "params": values_to_json(&self.space.decode(&r.x)), "loss": loss })
            })
            .collect();
        for r in results {
            if r.loss.is_finite() && self.best.as_ref().is_none_or(|b| r.loss < b.loss) {
                self.best = Some(r.clone());
            }
        }
        let _ = self.call("tell", json!({ "results": items }));
    }

    fn inject(&mut self, migrant: Evaluated) {
        let params = values_to_json(&self.space.decode(&migrant.x));
        let _ = self.call("inject", json!({ "params": params, "loss": migrant.loss }));
    }

    fn best(&self) -> Option<&Evaluated> {
        self.best.as_ref()
    }

    /// Sent only when the plugin's `configure` reply listed the hook's method in `hooks` (a
    /// plugin that did not ask is not disturbed).
    fn hook(&mut self, event: &doin_optimize::Hook) {
        use doin_optimize::Hook;
        let method = event.method();
        let wanted = self.with_host(|h| {
            h.handshake()
                .and_then(|r| r.get("hooks"))
                .and_then(Json::as_array)
                .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(method)))
        });
        if wanted != Some(true) {
            return;
        }
        let params = match event {
            Hook::GenerationStart { generation } => json!({ "generation": generation }),
            Hook::BetweenCandidates { done, total } => json!({ "done": done, "total": total }),
            Hook::GenerationEnd { generation, best_loss } => {
                json!({ "generation": generation, "best_loss": best_loss.filter(|l| l.is_finite()) })
            }
            Hook::ChampionFound { x, loss } => json!({
                "params": values_to_json(&self.space.decode(x)),
                "loss": Some(*loss).filter(|l| l.is_finite()),
            }),
        };
        let _ = self.call(method, params);
    }

    /// The plugin's `snapshot` state (a string it chose), or empty when it has none.
    fn snapshot(&self) -> Vec<u8> {
        self.with_host(|h| h.call("snapshot", json!({})))
            .and_then(Result::ok)
            .and_then(|r| r.get("state").and_then(Json::as_str).map(|s| s.as_bytes().to_vec()))
            .unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let state = std::str::from_utf8(bytes).map_err(|e| SnapshotError(e.to_string()))?.to_owned();
        self.with_host(|h| h.call("restore", json!({ "state": state })))
            .ok_or_else(|| SnapshotError("plugin host poisoned".into()))?
            .map(|_| ())
            .map_err(|e| SnapshotError(e.to_string()))
    }
}

/// How long measuring a model artifact on the held-out data may take.
pub const MEASURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long one inference call (a batch of rows) may take.
pub const INFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most numbers in one output row of a plugin's `infer`.
pub const MAX_OUTPUTS: usize = 4096;
/// Largest `inference_tolerance` a plugin may declare.
pub const MAX_TOLERANCE: f64 = 1.0;

/// A domain run by a plugin process: the plugin declares its space and direction in the
/// handshake; evaluations are serialized through the one process. A plugin that declares
/// `model: true` has trained models: `train` returns one, `load` hands one to the plugin (once
/// per process and model), `measure` scores the loaded model on the plugin's held-out data and
/// `infer` runs it on rows. Models run in a second process of the plugin (started at the first
/// such call), so serving a request never waits for an evaluation's training.
#[derive(Debug)]
pub struct PluginDomain {
    id: String,
    space: Space,
    names: Vec<String>,
    higher_is_better: bool,
    model: bool,
    tolerance: f64,
    host: Mutex<PluginHost>,
    /// How to start the model process.
    spec: PluginSpec,
    configure: Json,
    /// The model process, and the model it holds (its hash and the process's start count).
    models: Mutex<Option<(PluginHost, Loaded)>>,
}

/// The model a plugin process holds: its hash and the process's start count when loaded.
type Loaded = Option<(Hash, u32)>;

impl PluginDomain {
    /// Starts the plugin for domain `id` with the user's configuration.
    pub fn start(spec: PluginSpec, id: &str, config: Json) -> Result<Self, PluginError> {
        let params = json!({
            "protocol": crate::PROTOCOL_VERSION,
            "role": "domain",
            "domain_id": id,
            "config": config,
        });
        let host = PluginHost::start(spec.clone(), params.clone())?;
        let hs = host.handshake().cloned().unwrap_or(Json::Null);
        let bad = |reason: String| PluginError::Handshake { plugin: host.name().to_owned(), reason };
        let space_json = hs.get("space").unwrap_or(&Json::Null);
        let space = space_from_json(space_json).map_err(bad)?;
        let names = names_from_json(space_json).map_err(bad)?;
        let higher_is_better = hs.get("higher_is_better").and_then(Json::as_bool).unwrap_or(true);
        let model = match hs.get("model") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(other) => return Err(bad(format!("`model` {other} is not true or false"))),
        };
        let tolerance = match hs.get("inference_tolerance") {
            None | Some(Json::Null) => 0.0,
            Some(v) => v.as_f64().filter(|t| (0.0..=MAX_TOLERANCE).contains(t)).ok_or_else(|| {
                bad(format!("`inference_tolerance` {v} is not a number in [0, {MAX_TOLERANCE}]"))
            })?,
        };
        Ok(Self {
            id: id.to_owned(),
            space,
            names,
            higher_is_better,
            model,
            tolerance,
            host: Mutex::new(host),
            spec,
            configure: params,
            models: Mutex::new(None),
        })
    }

    /// Runs `f` with the supervised process.
    pub fn with_host<R>(&self, f: impl FnOnce(&mut PluginHost) -> R) -> Option<R> {
        self.host.lock().ok().map(|mut h| f(&mut h))
    }

    fn call(&self, method: &str, params: Json, budget: &Budget) -> Result<Json, EvalError> {
        let mut host = self.host.lock().map_err(|_| EvalError::Failed("plugin host poisoned".into()))?;
        Self::call_on(&mut host, method, params, budget.deadline)
    }

    fn call_on(
        host: &mut PluginHost,
        method: &str,
        params: Json,
        deadline: Instant,
    ) -> Result<Json, EvalError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(EvalError::Timeout);
        }
        host.call_with_timeout(method, params, left).map_err(|e| match e {
            PluginError::Timeout { .. } => EvalError::Timeout,
            PluginError::Memory { .. } => EvalError::ResourceLimit(e.to_string()),
            PluginError::Backoff { retry_in, .. } => EvalError::Unavailable(retry_in, e.to_string()),
            // The SDK names an input the model cannot take `BadInput`.
            PluginError::Remote { ref message, .. } if message.starts_with("BadInput:") => {
                EvalError::BadParams(message.trim_start_matches("BadInput:").trim().to_owned())
            }
            other => EvalError::Failed(other.to_string()),
        })
    }

    /// Calls `method` about the model `artifact` in the model process, first handing the model
    /// to it unless it holds it already (since its last start).
    /// Runs `method` on the model `artifact` (content address `hash`), loading it into the model
    /// process first unless it is the one loaded.
    fn with_model(
        &self,
        hash: Hash,
        artifact: &[u8],
        method: &str,
        mut params: Json,
        timeout: std::time::Duration,
    ) -> Result<Json, EvalError> {
        if !self.model {
            return Err(EvalError::Unsupported(format!("plugin domain {} declares no model", self.id)));
        }
        let deadline = Instant::now() + timeout;
        let mut guard = self.models.lock().map_err(|_| EvalError::Failed("plugin host poisoned".into()))?;
        if guard.is_none() {
            let host = PluginHost::start(self.spec.clone(), self.configure.clone())
                .map_err(|e| EvalError::Failed(format!("starting the model process: {e}")))?;
            *guard = Some((host, None));
        }
        let Some((host, loaded)) = guard.as_mut() else {
            return Err(EvalError::Failed("plugin model process missing".into()));
        };
        if *loaded != Some((hash, host.starts())) {
            *loaded = None;
            let load = json!({ "model": hash.to_string(), "artifact": hex::encode(artifact) });
            Self::call_on(host, "load", load, deadline)?;
            // A restart during `load` leaves the new process without the model: loaded again
            // at the next call.
            *loaded = Some((hash, host.starts()));
        }
        params["model"] = json!(hash.to_string());
        Self::call_on(host, method, params, deadline)
    }

    /// The model process's pid (once started).
    pub fn model_pid(&self) -> Option<u32> {
        self.models.lock().ok()?.as_ref()?.0.pid()
    }

    fn malformed(&self, method: &str, reason: String) -> EvalError {
        let name = self.with_host(|h| h.name().to_owned()).unwrap_or_else(|| self.id.clone());
        crate::host::record_error(&name, &format!("`{method}`: {reason}"));
        EvalError::Failed(format!("plugin {}: `{method}` {reason}", self.id))
    }
}

/// A plugin's `infer` reply for `rows` rows: `outputs` (one array of finite numbers per row) and
/// optional `labels` (one non-negative integer per row).
pub fn inference_from_json(reply: &Json, rows: usize) -> Result<Inference, String> {
    let list = reply.get("outputs").and_then(Json::as_array).ok_or("no `outputs` array")?;
    if list.len() != rows {
        return Err(format!("{} output rows for {rows} input rows", list.len()));
    }
    let mut outputs = Vec::with_capacity(rows);
    for (i, row) in list.iter().enumerate() {
        let row = row.as_array().ok_or(format!("outputs[{i}] is not an array"))?;
        if row.is_empty() || row.len() > MAX_OUTPUTS {
            return Err(format!("outputs[{i}] has {} numbers (1..={MAX_OUTPUTS} allowed)", row.len()));
        }
        let row: Option<Vec<f64>> = row.iter().map(|x| x.as_f64().filter(|x| x.is_finite())).collect();
        outputs.push(row.ok_or(format!("outputs[{i}] holds something not a finite number"))?);
    }
    let labels = match reply.get("labels") {
        None | Some(Json::Null) => None,
        Some(Json::Array(l)) if l.len() == rows => Some(
            l.iter()
                .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or("`labels` holds something not a class index")?,
        ),
        Some(_) => return Err(format!("`labels` is not an array of {rows} class indices")),
    };
    Ok(Inference { outputs, labels })
}

impl Domain for PluginDomain {
    fn id(&self) -> &str {
        &self.id
    }

    fn space(&self) -> &Space {
        &self.space
    }

    fn param_names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn higher_is_better(&self) -> bool {
        self.higher_is_better
    }

    fn evaluate(
        &self,
        params: &[Value],
        seed: Option<&Hash>,
        budget: Budget,
    ) -> Result<Measurement, EvalError> {
        if params.len() != self.space.len() {
            return Err(EvalError::BadParams(format!(
                "{} parameters, the domain has {}",
                params.len(),
                self.space.len()
            )));
        }
        let seed_hex = seed.map(|s| hex::encode(s.0));
        // Evaluators first have the plugin build (and cache) the data their seed selects.
        let data = match &seed_hex {
            Some(s) => self
                .call("eval_data", json!({ "seed": s }), &budget)?
                .get("data")
                .cloned()
                .unwrap_or(Json::Null),
            None => Json::Null,
        };
        let wall = budget.deadline.saturating_duration_since(Instant::now()).as_secs_f64();
        let reply = self.call(
            "evaluate",
            json!({
                "params": values_to_json(params),
                "seed": seed_hex,
                "data": data,
                "limits": { "max_wall_s": wall, "max_epochs": budget.max_epochs, "max_memory_bytes": budget.max_memory_bytes },
            }),
            &budget,
        )?;
        let Some(performance) = reply.get("performance").and_then(Json::as_f64).filter(|p| p.is_finite())
        else {
            // The call went through, but the figure is unusable: an error of the plugin's,
            // counted and logged like a fault (a plugin answering `null` failed silently).
            let message = format!("`performance` missing or not finite in {:.120}", reply.to_string());
            let name = self.with_host(|h| h.name().to_owned()).unwrap_or_else(|| self.id.clone());
            crate::host::record_error(&name, &message);
            return Err(EvalError::Failed(format!("plugin {}: {message}", self.id)));
        };
        let metrics = reply
            .get("metrics")
            .and_then(Json::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v))).take(64).collect())
            .unwrap_or_default();
        Ok(Measurement { performance, metrics })
    }

    fn train(&self, params: &[Value], seed: Option<&Hash>, budget: Budget) -> Result<Vec<u8>, EvalError> {
        let reply = self.call(
            "train",
            json!({ "params": values_to_json(params), "seed": seed.map(|s| hex::encode(s.0)) }),
            &budget,
        )?;
        let artifact = reply
            .get("artifact")
            .and_then(Json::as_str)
            .ok_or_else(|| EvalError::Failed("`artifact` missing from the train reply".into()))?;
        hex::decode(artifact).map_err(|e| EvalError::Failed(format!("`artifact` is not hex: {e}")))
    }

    fn has_model(&self) -> bool {
        self.model
    }

    fn measure_artifact(&self, artifact: &[u8]) -> Result<f64, EvalError> {
        let reply =
            self.with_model(Hash::of_artifact(artifact), artifact, "measure", json!({}), MEASURE_TIMEOUT)?;
        reply
            .get("performance")
            .and_then(Json::as_f64)
            .filter(|p| p.is_finite())
            .ok_or_else(|| self.malformed("measure", "reply has no finite `performance`".into()))
    }

    fn infer(&self, artifact: &[u8], rows: &[Vec<f64>]) -> Result<Inference, EvalError> {
        self.infer_known(&Hash::of_artifact(artifact), artifact, rows)
    }

    /// The model process keeps the model loaded under `hash`: a request for the loaded model
    /// sends only its rows, and the bytes are not hashed again.
    fn infer_known(&self, hash: &Hash, artifact: &[u8], rows: &[Vec<f64>]) -> Result<Inference, EvalError> {
        if rows.iter().flatten().any(|x| !x.is_finite()) {
            return Err(EvalError::BadParams("an input is not a finite number".into()));
        }
        let reply = self.with_model(*hash, artifact, "infer", json!({ "rows": rows }), INFER_TIMEOUT)?;
        inference_from_json(&reply, rows.len()).map_err(|reason| self.malformed("infer", reason))
    }

    fn inference_tolerance(&self) -> f64 {
        self.tolerance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_space_names_its_parameters_or_gets_positional_names() {
        let v = json!([
            { "kind": "log", "low": 1e-4, "high": 1e-2, "name": "learning_rate" },
            { "kind": "int", "low": 1, "high": 3 },
        ]);
        assert_eq!(names_from_json(&v).unwrap(), ["learning_rate", "p1"]);
        let twice = json!([{ "low": 0, "high": 1, "name": "a" }, { "low": 0, "high": 1, "name": "a" }]);
        assert!(names_from_json(&twice).unwrap_err().contains("used twice"));
        let bad = json!([{ "low": 0, "high": 1, "name": 7 }]);
        assert!(names_from_json(&bad).unwrap_err().contains("space[0]"));
    }
}
