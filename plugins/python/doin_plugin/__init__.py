"""DOIN plugin SDK, protocol version 1 (standard library only).

A plugin is a program that reads one JSON request per line on stdin and writes one JSON reply
per line on stdout (see docs/plugins.md in the DOIN repository). Subclass `Optimizer`,
`Domain` or `Client` (a federated contributor, Flower's `NumPyClient` shape), implement the
methods you need, and call `serve(YourPlugin())`:

    from doin_plugin import Domain, serve, float_dim

    class Parabola(Domain):
        space = [float_dim(-5, 5)]
        higher_is_better = False
        def evaluate(self, params, seed, data, limits):
            return params[0] ** 2

    if __name__ == "__main__":
        serve(Parabola())

While a method runs, `print()` goes to stderr (the node logs it), so stray output cannot corrupt
the protocol; use `log()` for messages the node should show at info level.
"""

import json
import sys
import traceback

PROTOCOL = 1
__all__ = [
    "PROTOCOL",
    "Optimizer",
    "Domain",
    "Client",
    "serve",
    "log",
    "float_dim",
    "log_dim",
    "int_dim",
    "categorical",
    "PluginError",
    "BadInput",
]


def _named(dim, name):
    if name is not None:
        dim["name"] = str(name)
    return dim


def float_dim(low, high, name=None):
    """A real parameter in [low, high]; `name` is what `param_bounds` and the chain call it
    (default p0, p1, ... by position)."""
    return _named({"kind": "float", "low": float(low), "high": float(high)}, name)


def log_dim(low, high, name=None):
    """A positive real parameter in [low, high] searched on a log scale."""
    return _named({"kind": "log", "low": float(low), "high": float(high)}, name)


def int_dim(low, high, name=None):
    """An integer parameter in [low, high]."""
    return _named({"kind": "int", "low": int(low), "high": int(high)}, name)


def categorical(choices, name=None):
    """One of `choices` options, passed as its index 0..choices-1."""
    return _named({"kind": "categorical", "choices": int(choices)}, name)


class PluginError(Exception):
    """Raise to answer a request with an error message (the process keeps running)."""


class BadInput(PluginError):
    """Raise from `infer` when a row does not fit the model (wrong width, a value it cannot
    take): the node answers the request 422, and a dispute over such a row counts the server's
    answer as wrong."""


class Optimizer:
    """An ask/tell optimizer. Parameters are lists of numbers in the space's units."""

    def configure(self, space, config, seed):
        """`space`: list of dims; `config`: the node's optimization_config; `seed`: int."""
        self.space = space
        return {}

    def ask(self, n):
        """Up to `n` candidate parameter lists."""
        raise PluginError("ask is not implemented")

    def tell(self, results):
        """`results`: list of (params, loss) pairs; loss is None for a failed evaluation."""

    def inject(self, params, loss):
        """A migrant (the network's verified champion): replace your worst member with it."""

    def snapshot(self):
        """A string that `restore` accepts, or None."""
        return None

    def restore(self, state):
        """Resume from a `snapshot` string."""

    # Hooks (the node calls only those a subclass overrides).
    def on_generation_start(self, generation):
        """A batch of the node's loop is about to be evaluated (`generation` counts batches)."""

    def on_between_candidates(self, done, total):
        """`done` of the batch's `total` candidates were measured."""

    def on_generation_end(self, generation, best_loss):
        """The batch was measured and told; `best_loss` is the node's best so far (or None)."""

    def on_champion_found(self, params, loss):
        """The network verified a new champion: its parameters and the loss measured here."""


_HOOKS = ("on_generation_start", "on_between_candidates", "on_generation_end", "on_champion_found")


class Domain:
    """A domain: what is optimized and how a candidate is measured."""

    space = []
    higher_is_better = True

    def configure(self, config):
        """`config`: the domain's configuration from the node. May set `self.space`."""
        return {}

    def eval_data(self, seed):
        """Build (and cache) the evaluation data an evaluator's `seed` (hex string) selects;
        return a small JSON-able handle that `evaluate` receives as `data`."""
        return None

    def evaluate(self, params, seed, data, limits):
        """Measure `params`. `seed` is None on the optimizer's own data, else the evaluator's
        hex seed; `limits` has max_wall_s, max_epochs and max_memory_bytes. Return the
        performance, or (performance, {metric: value}), or {"performance": .., "metrics": {..}}."""
        raise PluginError("evaluate is not implemented")

    def train(self, params, seed):
        """Train the model `params` describe and return it as bytes (for inference)."""
        raise PluginError("train is not implemented")

    # A domain with a model overrides `train`, `measure` and `infer` (and usually `load`): its
    # verified champion is then a model the network measures and serves.

    # How far an `infer` output may be from another machine's for the same model and row and
    # still be the same answer. 0: equal as float32 (deterministic CPU code). Raise it when the
    # model runs where results vary in the last bits (GPU kernels, other BLAS builds).
    inference_tolerance = 0.0

    def load(self, artifact):
        """Turn `train`'s bytes into a model object (kept by the SDK: `measure` and `infer`
        receive it). Default: the bytes themselves."""
        return artifact

    def measure(self, model):
        """The model's performance on the domain's held-out data: deterministic, so every
        honest evaluator gets the same figure from the same bytes."""
        raise PluginError("measure is not implemented")

    def infer(self, model, rows):
        """Run the model on `rows` (lists of numbers): one list of output numbers per row, or
        (outputs, labels) with one class index per row. Deterministic (see
        `inference_tolerance`); raise `BadInput` for a row the model cannot take."""
        raise PluginError("infer is not implemented")


class Client:
    """A federated contributor, shaped like Flower's `NumPyClient` so a Flower client ports by
    changing its base class: `doin fl join --plugin "python3 my_client.py ..."` runs it, sends
    the job's global model to `fit` every round, signs what `fit` returns (as an update: the
    difference to the global model) with the contributor's key and submits it.

    Parameters are a list of arrays, one per tensor in the job's model order (for the built-in
    MLP: each layer's weights, shape (inputs, outputs), then its biases): NumPy `float32` arrays
    when NumPy is installed, else flat lists of floats. `config` carries `round`, `lr`,
    `batch`, `seed` and `sizes` (the job's layer sizes)."""

    def configure(self, config):
        """`config`: {"job": id}. Return extra handshake fields, or None."""
        return {}

    def get_parameters(self, config):
        """This client's model parameters (its shapes are checked against the job's before the
        contributor registers)."""
        raise PluginError("get_parameters is not implemented")

    def fit(self, parameters, config):
        """Train from `parameters` on local data; return (parameters, num_examples, metrics)."""
        raise PluginError("fit is not implemented")

    def evaluate(self, parameters, config):
        """Measure `parameters` on local data; return (loss, num_examples, metrics)."""
        raise PluginError("evaluate is not implemented")


def _arrays(tensors):
    """Protocol tensors ({"shape", "data"}) as NumPy arrays, or flat lists without NumPy."""
    try:
        import numpy as np
    except ImportError:
        return [list(map(float, t["data"])) for t in tensors]
    return [np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]) for t in tensors]


def _tensors(arrays):
    """Arrays (NumPy or nested lists) as protocol tensors."""
    out = []
    for a in arrays:
        if hasattr(a, "shape") and hasattr(a, "ravel"):
            out.append({"shape": [int(d) for d in a.shape], "data": [_finite(v, "a parameter") for v in a.ravel().tolist()]})
        else:
            flat, stack = [], [a]
            while stack:
                x = stack.pop()
                if isinstance(x, (list, tuple)):
                    stack.extend(reversed(x))
                else:
                    flat.append(_finite(x, "a parameter"))
            out.append({"shape": [len(flat)], "data": flat})
    return out


def _metrics(m):
    return {str(k): float(v) for k, v in (m or {}).items()}


def log(message):
    """Send a log line to the node."""
    _write({"log": str(message)})


_out = sys.stdout
# Models the node handed over (`load`), by hash; the node re-sends one it needs again.
_models = {}
_MAX_MODELS = 4


def _write(obj):
    _out.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
    _out.flush()


def _finite(x, what="performance"):
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        raise PluginError("%s is not finite" % what)
    return x


def _dispatch(plugin, method, params):
    if method == "configure":
        if params.get("protocol") != PROTOCOL:
            raise PluginError("protocol %r is not %d" % (params.get("protocol"), PROTOCOL))
        reply = {"protocol": PROTOCOL, "name": type(plugin).__name__}
        if isinstance(plugin, Client):
            extra = plugin.configure(params.get("config") or {})
            reply["role"] = "client"
        elif isinstance(plugin, Optimizer):
            extra = plugin.configure(params.get("space", []), params.get("config") or {}, params.get("seed", 0))
            reply["role"] = "optimizer"
            reply["hooks"] = [h for h in _HOOKS if getattr(type(plugin), h) is not getattr(Optimizer, h)]
        else:
            extra = plugin.configure(params.get("config") or {})
            reply["role"] = "domain"
            reply["space"] = plugin.space
            reply["higher_is_better"] = bool(plugin.higher_is_better)
            has_model = all(getattr(type(plugin), m) is not getattr(Domain, m) for m in ("train", "measure", "infer"))
            reply["model"] = has_model
            if has_model:
                reply["inference_tolerance"] = float(plugin.inference_tolerance)
        reply.update(extra or {})
        return reply
    if method == "shutdown":
        return {}
    if isinstance(plugin, Client):
        config = params.get("config") or {}
        if method == "get_parameters":
            return {"parameters": _tensors(plugin.get_parameters(config))}
        if method == "fit":
            out = plugin.fit(_arrays(params.get("parameters") or []), config)
            arrays, n, metrics = (tuple(out) + ({},))[:3]
            return {"parameters": _tensors(arrays), "num_examples": int(n), "metrics": _metrics(metrics)}
        if method == "evaluate":
            loss, n, metrics = (tuple(plugin.evaluate(_arrays(params.get("parameters") or []), config)) + ({},))[:3]
            return {"loss": _finite(loss, "loss"), "num_examples": int(n), "metrics": _metrics(metrics)}
    elif isinstance(plugin, Optimizer):
        if method == "ask":
            return {"candidates": [list(map(float, c)) for c in plugin.ask(int(params.get("n", 1)))]}
        if method == "tell":
            plugin.tell([(r["params"], r.get("loss")) for r in params.get("results", [])])
            return {}
        if method == "inject":
            plugin.inject(params["params"], params.get("loss"))
            return {}
        if method == "snapshot":
            return {"state": plugin.snapshot()}
        if method == "restore":
            plugin.restore(params.get("state"))
            return {}
        if method == "on_generation_start":
            plugin.on_generation_start(int(params.get("generation", 0)))
            return {}
        if method == "on_between_candidates":
            plugin.on_between_candidates(int(params.get("done", 0)), int(params.get("total", 0)))
            return {}
        if method == "on_generation_end":
            plugin.on_generation_end(int(params.get("generation", 0)), params.get("best_loss"))
            return {}
        if method == "on_champion_found":
            plugin.on_champion_found(params.get("params"), params.get("loss"))
            return {}
    else:
        if method == "eval_data":
            return {"data": plugin.eval_data(params.get("seed"))}
        if method == "evaluate":
            out = plugin.evaluate(params["params"], params.get("seed"), params.get("data"), params.get("limits") or {})
            if isinstance(out, dict):
                perf, metrics = out["performance"], out.get("metrics") or {}
            elif isinstance(out, tuple):
                perf, metrics = out
            else:
                perf, metrics = out, {}
            return {"performance": _finite(perf), "metrics": {k: float(v) for k, v in metrics.items()}}
        if method == "train":
            blob = plugin.train(params["params"], params.get("seed"))
            return {"artifact": bytes(blob).hex()}
        if method == "load":
            _models[params["model"]] = plugin.load(bytes.fromhex(params["artifact"]))
            while len(_models) > _MAX_MODELS:  # bounded: the oldest goes
                _models.pop(next(iter(_models)))
            return {}
        if method in ("measure", "infer"):
            if params.get("model") not in _models:
                raise PluginError("model %r is not loaded" % params.get("model"))
            model = _models[params["model"]]
            if method == "measure":
                return {"performance": _finite(plugin.measure(model))}
            out = plugin.infer(model, params.get("rows") or [])
            labels = None
            if isinstance(out, tuple):
                out, labels = out
            if hasattr(out, "tolist"):
                out = out.tolist()
            outputs = []
            for row in out:
                row = row.tolist() if hasattr(row, "tolist") else row
                row = row if isinstance(row, (list, tuple)) else [row]  # a scalar output per row
                outputs.append([_finite(v, "an output") for v in row])
            reply = {"outputs": outputs}
            if labels is not None:
                reply["labels"] = [int(x) for x in (labels.tolist() if hasattr(labels, "tolist") else labels)]
            return reply
    raise PluginError("unknown method %r" % method)


def serve(plugin, stdin=None):
    """Answer requests until `shutdown` or end of input."""
    global _out
    stdin = stdin or sys.stdin
    _out = sys.stdout
    # User code prints to stderr; only the SDK writes protocol lines.
    sys.stdout = sys.stderr
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
            rid, method, params = request.get("id"), request.get("method"), request.get("params") or {}
        except (ValueError, AttributeError) as e:
            sys.stderr.write("doin_plugin: bad request line: %s\n" % e)
            continue
        try:
            result = _dispatch(plugin, method, params)
            _write({"id": rid, "result": result})
        except Exception as e:  # noqa: BLE001 - every failure becomes an error reply
            if not isinstance(e, PluginError):  # a PluginError is a deliberate answer
                traceback.print_exc(file=sys.stderr)
            _write({"id": rid, "error": {"message": "%s: %s" % (type(e).__name__, e)}})
        if method == "shutdown":
            break
