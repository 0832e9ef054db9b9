#!/usr/bin/env python3
"""A DOIN optimizer plugin wrapping DEAP's genetic algorithm in ask/tell form.

Tournament selection, simulated-binary crossover and polynomial mutation (DEAP's bounded
operators) with elitism, searching in a normalized cube; log-scaled dimensions are searched on
their log, integers and categories are rounded when asked. The network's champion (inject)
replaces the worst individual at the next generation.

optimization_config keys (all optional): population (default 40), cxpb (0.9), mutpb (0.3),
eta (20), elite (2), tournament (3).

Run by the node as: python3 plugins/python/examples/deap_optimizer.py
"""

import json
import math
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deap import base, creator, tools  # noqa: E402

from doin_plugin import Optimizer, PluginError, serve  # noqa: E402

if not hasattr(creator, "FitnessMin"):
    creator.create("FitnessMin", base.Fitness, weights=(-1.0,))
    creator.create("Individual", list, fitness=creator.FitnessMin)


class DeapGa(Optimizer):
    def configure(self, space, config, seed):
        if not space:
            raise PluginError("empty space")
        self.space = space
        self.rng = random.Random(seed)
        random.seed(seed)
        self.n = int(config.get("population", 40))
        self.cxpb = float(config.get("cxpb", 0.9))
        self.mutpb = float(config.get("mutpb", 0.3))
        self.eta = float(config.get("eta", 20.0))
        self.elite = int(config.get("elite", 2))
        tb = base.Toolbox()
        tb.register("mate", tools.cxSimulatedBinaryBounded, eta=self.eta, low=0.0, up=1.0)
        tb.register("mutate", tools.mutPolynomialBounded, eta=self.eta, low=0.0, up=1.0, indpb=1.0 / len(space))
        tb.register("select", tools.selTournament, tournsize=int(config.get("tournament", 3)))
        self.tb = tb
        self.population = []  # evaluated individuals
        self.pending = [creator.Individual([self.rng.random() for _ in space]) for _ in range(self.n)]
        self.asked = {}
        self.migrant = None
        return {"population": self.n}

    # Unit cube <-> parameter units.
    def _decode(self, u):
        out = []
        for x, d in zip(u, self.space):
            k = d.get("kind", "float")
            if k == "float":
                out.append(d["low"] + x * (d["high"] - d["low"]))
            elif k == "log":
                out.append(math.exp(math.log(d["low"]) + x * (math.log(d["high"]) - math.log(d["low"]))))
            elif k == "int":
                out.append(min(d["high"], d["low"] + math.floor(x * (d["high"] - d["low"] + 1))))
            else:
                out.append(min(d["choices"] - 1, math.floor(x * d["choices"])))
        return out

    def _encode(self, p):
        out = []
        for v, d in zip(p, self.space):
            k = d.get("kind", "float")
            if k == "float":
                u = (v - d["low"]) / (d["high"] - d["low"])
            elif k == "log":
                u = (math.log(v) - math.log(d["low"])) / (math.log(d["high"]) - math.log(d["low"]))
            elif k == "int":
                u = (v - d["low"] + 0.5) / (d["high"] - d["low"] + 1)
            else:
                u = (v + 0.5) / d["choices"]
            out.append(min(1.0, max(0.0, u)))
        return out

    def ask(self, n):
        out = []
        while self.pending and len(out) < n:
            ind = self.pending.pop()
            params = [float(v) for v in self._decode(ind)]
            self.asked[json.dumps(params)] = ind
            out.append(params)
        return out

    def tell(self, results):
        for params, loss in results:
            # The node may hand back parameters rounded through its own encoding: fall back
            # to re-encoding them when the exact key is gone.
            ind = self.asked.pop(json.dumps([float(v) for v in params]), None)
            if ind is None:
                if self.asked:
                    self.asked.pop(next(iter(self.asked)))
                ind = creator.Individual(self._encode(params))
            ind.fitness.values = (float("inf") if loss is None else float(loss),)
            self.population.append(ind)
        if not self.pending and not self.asked:
            self._next_generation()

    def _next_generation(self):
        pop = sorted(self.population, key=lambda i: i.fitness.values[0])[: self.n]
        if self.migrant is not None and pop and self.migrant.fitness.values[0] < pop[-1].fitness.values[0]:
            pop[-1] = self.migrant
        self.migrant = None
        elite = [self.tb.clone(i) for i in pop[: self.elite]]
        offspring = [self.tb.clone(i) for i in self.tb.select(pop, len(pop) - len(elite))]
        for a, b in zip(offspring[::2], offspring[1::2]):
            if self.rng.random() < self.cxpb:
                self.tb.mate(a, b)
                del a.fitness.values, b.fitness.values
        for m in offspring:
            if self.rng.random() < self.mutpb:
                self.tb.mutate(m)
                del m.fitness.values
        self.population = elite
        self.pending = [creator.Individual(list(o)) for o in offspring]

    def inject(self, params, loss):
        ind = creator.Individual(self._encode(params))
        ind.fitness.values = (float(loss),)
        self.migrant = ind

    def snapshot(self):
        return json.dumps({
            "population": [[list(i), i.fitness.values[0]] for i in self.population],
            "pending": [list(i) for i in self.pending] + [list(i) for i in self.asked.values()],
        })

    def restore(self, state):
        s = json.loads(state)
        self.population = []
        for x, f in s["population"]:
            ind = creator.Individual(x)
            ind.fitness.values = (f,)
            self.population.append(ind)
        self.pending = [creator.Individual(x) for x in s["pending"]]
        self.asked = {}


if __name__ == "__main__":
    serve(DeapGa())
