#!/usr/bin/env python3
"""A DOIN optimizer plugin wrapping Optuna's TPE sampler (the practitioner's default) in
ask/tell form: the yardstick the node's own optimizers are measured against.

Each space dimension becomes an Optuna distribution: `float` -> FloatDistribution, `log` ->
FloatDistribution(log=True), `int` -> IntDistribution, `categorical` -> CategoricalDistribution
over the indices. Candidates in flight are Optuna trials not yet told, so the sampler's constant
liar sees them. The network's champion (inject) is added as a finished trial.

optimization_config keys (all optional): n_startup_trials (Optuna's default 10), multivariate
(false: Optuna's default TPE), constant_liar (true).

Run by the node as: python3 plugins/python/examples/optuna_optimizer.py
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import optuna  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from doin_plugin import Optimizer, PluginError, serve  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def distribution(d):
    kind = d.get("kind", "float")
    if kind == "float":
        return FloatDistribution(d["low"], d["high"])
    if kind == "log":
        return FloatDistribution(d["low"], d["high"], log=True)
    if kind == "int":
        return IntDistribution(int(d["low"]), int(d["high"]))
    if kind == "categorical":
        return CategoricalDistribution(list(range(int(d["choices"]))))
    raise PluginError(f"unknown dimension kind {kind!r}")


class OptunaTpe(Optimizer):
    def configure(self, space, config, seed):
        if not space:
            raise PluginError("empty space")
        self.names = [d.get("name") or f"x{i}" for i, d in enumerate(space)]
        self.dists = {n: distribution(d) for n, d in zip(self.names, space)}
        sampler = optuna.samplers.TPESampler(
            seed=int(seed) % (2**32),
            n_startup_trials=int(config.get("n_startup_trials", 10)),
            multivariate=bool(config.get("multivariate", False)),
            constant_liar=bool(config.get("constant_liar", True)),
        )
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        self.asked = {}  # tuple(params) -> list of trials in flight
        return {"sampler": "optuna-tpe"}

    def _params(self, trial):
        return [float(trial.params[n]) for n in self.names]

    def ask(self, n):
        out = []
        for _ in range(n):
            trial = self.study.ask(self.dists)
            p = self._params(trial)
            self.asked.setdefault(tuple(p), []).append(trial)
            out.append(p)
        return out

    def tell(self, results):
        for params, loss in results:
            waiting = self.asked.get(tuple(float(x) for x in params))
            if not waiting:
                continue  # not ours (or told twice)
            trial = waiting.pop(0)
            if not waiting:
                del self.asked[tuple(float(x) for x in params)]
            if loss is None:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(trial, float(loss))

    def inject(self, params, loss):
        values = {}
        for n, v in zip(self.names, params):
            d = self.dists[n]
            v = int(round(v)) if isinstance(d, (IntDistribution, CategoricalDistribution)) else float(v)
            if isinstance(d, CategoricalDistribution) and v not in d.choices:
                return
            values[n] = v
        try:
            self.study.add_trial(optuna.trial.create_trial(params=values, distributions=self.dists, value=float(loss)))
        except ValueError:
            pass  # outside the space: a migrant we cannot learn from


if __name__ == "__main__":
    serve(OptunaTpe())
