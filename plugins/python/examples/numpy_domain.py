#!/usr/bin/env python3
"""A DOIN domain plugin that trains a small neural network regressor.

The model is a one-hidden-layer MLP fitted with mini-batch Adam. It runs on PyTorch when
PyTorch is installed (on the GPU when CUDA is available; set DOIN_DEVICE=cpu to force the CPU)
and on NumPy otherwise. The task: learn y = sin(3 x0) + x1 * x2 - 0.5 x3^2 + noise from 8 inputs
(half of them irrelevant). The optimizer's data comes from a fixed seed; an evaluator's data is
generated from its seed (`eval_data`), so nobody can tune to the evaluators' samples.

Searched: hidden width, learning rate (log), L2 weight decay (log), batch size, epochs.
Performance = -validation MSE (higher is better).

The champion is a model: `train` returns its weights (an .npz archive), `measure` scores them on
a fixed held-out set and `infer` runs them on rows of 8 inputs — in NumPy float32 whatever
trained it, so the answers are the same on every machine up to `inference_tolerance` (BLAS
builds may differ in the last bits).

Run by the node as: python3 plugins/python/examples/numpy_domain.py
"""

import hashlib
import io
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from doin_plugin import BadInput, Domain, PluginError, int_dim, log_dim, serve  # noqa: E402

try:  # optional
    import torch  # type: ignore
except ImportError:  # pragma: no cover - depends on the machine
    torch = None

FEATURES = 8


def make_data(seed_bytes, n=1200):
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(seed_bytes, digest_size=8).digest(), "little"))
    x = rng.uniform(-1, 1, size=(n, FEATURES)).astype(np.float32)
    y = np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2 + 0.05 * rng.standard_normal(n)
    split = int(n * 0.75)
    y = y.astype(np.float32)[:, None]
    return x[:split], y[:split], x[split:], y[split:]


def train_numpy(params, data, limits, seed):
    width, lr, l2, batch, epochs = int(params[0]), params[1], params[2], int(params[3]), int(params[4])
    xt, yt, xv, yv = data
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((FEATURES, width)) * np.sqrt(2.0 / FEATURES)).astype(np.float32)
    b1 = np.zeros(width, np.float32)
    w2 = (rng.standard_normal((width, 1)) * np.sqrt(1.0 / width)).astype(np.float32)
    b2 = np.zeros(1, np.float32)
    ps = [w1, b1, w2, b2]
    m = [np.zeros_like(p) for p in ps]
    v = [np.zeros_like(p) for p in ps]
    t = 0
    deadline = time.time() + float(limits.get("max_wall_s", 60)) * 0.9
    max_epochs = int(limits.get("max_epochs") or epochs)
    for _ in range(min(epochs, max_epochs)):
        order = rng.permutation(len(xt))
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            x, y = xt[idx], yt[idx]
            h = np.maximum(x @ w1 + b1, 0)
            out = h @ w2 + b2
            g = 2 * (out - y) / len(x)
            gw2 = h.T @ g + l2 * w2
            gb2 = g.sum(0)
            gh = (g @ w2.T) * (h > 0)
            gw1 = x.T @ gh + l2 * w1
            gb1 = gh.sum(0)
            t += 1
            for p, gp, mp, vp in zip(ps, [gw1, gb1, gw2, gb2], m, v):
                mp *= 0.9
                mp += 0.1 * gp
                vp *= 0.999
                vp += 0.001 * gp * gp
                p -= lr * (mp / (1 - 0.9**t)) / (np.sqrt(vp / (1 - 0.999**t)) + 1e-8)
        if time.time() > deadline:
            raise PluginError("time limit reached while training")
    pred = np.maximum(xv @ w1 + b1, 0) @ w2 + b2
    return float(np.mean((pred - yv) ** 2)), ps


def train_torch(params, data, limits, seed):
    width, lr, l2, batch, epochs = int(params[0]), params[1], params[2], int(params[3]), int(params[4])
    device = os.environ.get("DOIN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    xt, yt, xv, yv = (torch.from_numpy(a).to(device) for a in data)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, width), torch.nn.ReLU(), torch.nn.Linear(width, 1)
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=l2)
    deadline = time.time() + float(limits.get("max_wall_s", 60)) * 0.9
    max_epochs = int(limits.get("max_epochs") or epochs)
    g = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(min(epochs, max_epochs)):
        order = torch.randperm(len(xt), generator=g).to(device)
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        if time.time() > deadline:
            raise PluginError("time limit reached while training")
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss(model(xv), yv).item()
    # Saved in the NumPy path's layout: weights (inputs, outputs).
    w1, b1, w2, b2 = (p.detach().cpu().numpy() for p in model.parameters())
    return mse, [w1.T.copy(), b1, w2.T.copy(), b2]


def forward(weights, x):
    """The model's answer for rows `x`, in float32 NumPy (the same code on every machine)."""
    w1, b1, w2, b2 = weights
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


class NeuralRegressor(Domain):
    space = [int_dim(4, 128), log_dim(1e-4, 3e-1), log_dim(1e-6, 1e-1), int_dim(8, 256), int_dim(1, 60)]
    higher_is_better = True
    inference_tolerance = 1e-5

    def configure(self, config):
        self.own = make_data(b"optimizer-data")
        # Held-out rows no optimizer trains on: what a trained model is measured on.
        _, _, self.held_x, self.held_y = make_data(b"held-out", n=2000)
        self.cache = {}
        backend = "numpy" if torch is None else "torch"
        if torch is not None:
            backend += ":" + (os.environ.get("DOIN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backend = backend
        return {"backend": backend}

    def eval_data(self, seed):
        if seed not in self.cache:
            if len(self.cache) >= 8:  # bounded cache
                self.cache.pop(next(iter(self.cache)))
            self.cache[seed] = make_data(bytes.fromhex(seed))
        return {"seed": seed, "rows": len(self.cache[seed][0]) + len(self.cache[seed][2])}

    def _fit(self, params, seed, limits):
        data = self.own if seed is None else self.cache.get(seed) or make_data(bytes.fromhex(seed))
        width, batch = int(params[0]), int(params[3])
        if 4 * (FEATURES * width + width * batch * 3) > int(limits.get("max_memory_bytes") or 2**62):
            raise PluginError("memory estimate over the limit")
        fit = train_numpy if torch is None else train_torch
        return fit(params, data, limits, 7)

    def evaluate(self, params, seed, data, limits):
        mse, _ = self._fit(params, seed, limits)
        return -mse, {"val_mse": mse}

    def train(self, params, seed):
        _, weights = self._fit(params, seed, {"max_wall_s": 600})
        buf = io.BytesIO()
        np.savez(buf, *weights)
        return buf.getvalue()

    def load(self, artifact):
        try:
            with np.load(io.BytesIO(artifact), allow_pickle=False) as z:
                weights = [z["arr_%d" % i].astype(np.float32) for i in range(4)]
        except (OSError, ValueError, KeyError) as e:
            raise PluginError("not a model of this domain: %s" % e)
        w1, b1, w2, b2 = weights
        if w1.ndim != 2 or w1.shape[0] != FEATURES or b1.shape != (w1.shape[1],) or w2.shape != (w1.shape[1], 1) or b2.shape != (1,):
            raise PluginError("not a model of this domain: shapes %s" % [w.shape for w in weights])
        return weights

    def measure(self, model):
        return -float(np.mean((forward(model, self.held_x) - self.held_y) ** 2))

    def infer(self, model, rows):
        if any(len(r) != FEATURES for r in rows):
            raise BadInput("each row needs %d inputs" % FEATURES)
        return forward(model, np.asarray(rows, dtype=np.float32))


if __name__ == "__main__":
    serve(NeuralRegressor())
