#!/usr/bin/env python3
"""A federated contributor in NumPy, written as a Flower `NumPyClient` would be.

It trains the job's model (layer sizes from the round's config: ReLU hidden layers, softmax
output, each layer's weights (inputs, outputs) then its biases) by mini-batch SGD on a local
CSV of rows "64 features, then the label" (what `doin fl split` writes).

Run by a contributor as:

    doin fl join --node HOST:PORT --job fl_digits --key me.key \\
        --plugin "python3 plugins/python/examples/numpy_fl_client.py client-0.csv"

Porting a Flower client: subclass `doin_plugin.Client` instead of `flwr.client.NumPyClient`
and keep `get_parameters`, `fit` and `evaluate`.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from doin_plugin import Client, PluginError, serve  # noqa: E402


def load(path):
    rows = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    if rows.shape[1] < 2:
        raise PluginError("%s: need features and a label per row" % path)
    return rows[:, :-1].astype(np.float32), rows[:, -1].astype(np.int64)


def forward(params, x):
    acts = [x]
    layers = len(params) // 2
    for l in range(layers):
        z = acts[-1] @ params[2 * l] + params[2 * l + 1]
        if l < layers - 1:
            acts.append(np.maximum(z, 0.0))
        else:
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            acts.append(e / e.sum(axis=1, keepdims=True))
    return acts


class DigitsClient(Client):
    def __init__(self, path):
        self.x, self.y = load(path)

    def get_parameters(self, config):
        sizes = config["sizes"]
        rng = np.random.default_rng(0)
        out = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            limit = np.sqrt(6.0 / (n_in + n_out))
            out += [rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32), np.zeros(n_out, np.float32)]
        return out

    def fit(self, parameters, config):
        params = [p.copy() for p in parameters]
        if params[0].shape[0] != self.x.shape[1]:
            raise PluginError("the model takes %d inputs, the data has %d" % (params[0].shape[0], self.x.shape[1]))
        lr, batch = float(config.get("lr", 0.2)), int(config.get("batch", 16))
        order = np.random.default_rng(int(config.get("seed", 0))).permutation(len(self.y))
        layers = len(params) // 2
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            acts = forward(params, self.x[idx])
            delta = acts[-1].copy()
            delta[np.arange(len(idx)), self.y[idx]] -= 1.0
            delta /= len(idx)
            for l in reversed(range(layers)):
                grad_w, grad_b = acts[l].T @ delta, delta.sum(axis=0)
                if l > 0:
                    delta = (delta @ params[2 * l].T) * (acts[l] > 0)
                params[2 * l] -= lr * grad_w
                params[2 * l + 1] -= lr * grad_b
        loss, _, metrics = self.evaluate(params, config)
        return params, len(self.y), {"train_loss": loss, "train_accuracy": metrics["accuracy"]}

    def evaluate(self, parameters, config):
        p = forward(parameters, self.x)[-1]
        loss = float(-np.log(np.maximum(p[np.arange(len(self.y)), self.y], 1e-12)).mean())
        return loss, len(self.y), {"accuracy": float((p.argmax(axis=1) == self.y).mean())}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: numpy_fl_client.py CSV")
    serve(DigitsClient(sys.argv[1]))
