#!/usr/bin/env python3
"""The optimizer-scaling series (issue 20): `doin bench devnet` runs with 1, 2, 4 ... optimizing
nodes beside the same 3 evaluator-only nodes, interleaved round by round (the order rotates so
that no setting always runs first on a warm machine), each run's JSON line appended to a file.

    python3 scripts/scaling_series.py run --optimizers 1,2,4 --rounds 12 --out series.jsonl
    python3 scripts/scaling_series.py summary series.jsonl [more.jsonl ...]

The summary prints, per setting, every run's `evals_per_node_to_target` (a run that missed the
target counts as the worst: its figure is a lower bound), the median and the mean of the runs
that reached it, the gain of each setting over one optimizer by the medians, and a bootstrap 90 %
interval of that gain (10 000 resamples, fixed seed) — with runs this spread out, the interval
says whether "in proportion" is shown or only not excluded.
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import time


def run(args):
    ks = [int(k) for k in args.optimizers.split(",")]
    for r in range(args.rounds):
        order = ks[r % len(ks):] + ks[: r % len(ks)]
        for k in order:
            cmd = [
                args.binary, "bench", "devnet",
                "--nodes", str(k + args.evaluators),
                "--evaluators-only", str(args.evaluators),
                "--domain", args.domain,
                "--target", str(args.target),
                "--timeout-s", str(args.timeout_s),
                "--base-port", str(args.base_port),
            ]
            started = time.time()
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
            if out.returncode != 0 or not lines:
                print(f"round {r} k={k}: failed ({out.returncode}): {out.stderr[-2000:]}", file=sys.stderr)
                continue
            line = json.loads(lines[-1])
            line["optimizers"] = k
            line["round"] = r
            line["wall_s"] = round(time.time() - started, 1)
            with open(args.out, "a") as f:
                f.write(json.dumps(line) + "\n")
            print(
                f"round {r} optimizers {k}: evals/node {line.get('evals_per_node_to_target')} "
                f"time {line.get('time_to_target_s')} s same_tip {line.get('same_tip')}",
                file=sys.stderr,
            )


def figure(line):
    """(evaluations per node, reached)."""
    return float(line.get("evals_per_node_to_target") or 0.0), line.get("time_to_target_s") is not None


def median_worst(runs):
    """The median with missed runs counted as the worst."""
    worst = max((e for e, _ in runs), default=0.0)
    return statistics.median([e if ok else worst + 1e9 for e, ok in runs]) if runs else None


def summary(args):
    by_k = {}
    for path in args.files:
        with open(path) as f:
            for l in f:
                l = l.strip()
                if l:
                    line = json.loads(l)
                    by_k.setdefault(int(line["optimizers"]), []).append(figure(line))
    rng = random.Random(20)
    out = {"bench": "scaling_series", "settings": {}}
    base = by_k.get(1)
    for k in sorted(by_k):
        runs = by_k[k]
        med = median_worst(runs)
        reached = [e for e, ok in runs if ok]
        s = {
            "runs": len(runs),
            "reached": len(reached),
            "each": [e if ok else f"*{e}" for e, ok in runs],
            "median": med,
            "mean_reached": round(statistics.mean(reached), 2) if reached else None,
        }
        if base and k != 1:
            s["gain_by_medians"] = round(median_worst(base) / med, 2) if med else None
            gains = []
            for _ in range(10_000):
                a = median_worst([rng.choice(base) for _ in base])
                b = median_worst([rng.choice(runs) for _ in runs])
                gains.append(a / b if b else float("inf"))
            gains.sort()
            s["gain_90pct"] = [round(gains[500], 2), round(gains[9_499], 2)]
        out["settings"][str(k)] = s
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--optimizers", default="1,2,4")
    r.add_argument("--rounds", type=int, default=12)
    r.add_argument("--evaluators", type=int, default=3)
    r.add_argument("--domain", default="mlp_digits")
    r.add_argument("--target", type=float, default=0.97)
    r.add_argument("--timeout-s", type=float, default=420)
    r.add_argument("--base-port", type=int, default=18470)
    r.add_argument("--binary", default="target/release/doin")
    r.add_argument("--out", required=True)
    s = sub.add_parser("summary")
    s.add_argument("files", nargs="+")
    a = p.parse_args()
    run(a) if a.cmd == "run" else summary(a)


if __name__ == "__main__":
    main()
