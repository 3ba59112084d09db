"""Ensembles of recipes on the leave-one-source-out folds, from
bench/loso.py's cache: for every way of drawing one run (seed) of each
recipe, the macro-F1 of the runs' averaged probabilities, which is what
`sentiscore ensemble` scores; then the mean over the draws, its range, and
the draws' worst case on issue #14's bar.

    python bench/loso_ensembles.py --out build/loso-10k \
        --recipe "idf=wd-idf,wd-idf-seed14,wd-idf-seed15" \
        --recipe "ind=wd-independent,wd-independent-seed14" \
        --ensemble idf --ensemble idf+idf --ensemble idf+ind

One run's LOSO mean moves by up to a point with its seed (BENCHMARKS.md,
"retraining noise"), so an ensemble is judged over every draw of its
members' seeds, never over one lucky pairing. On a ``bench/loso.py
--in-domain`` folder its one test (``dev``) stands in for the groups.
Writes nothing; prints Markdown.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import PEERS, fold_metrics, read  # noqa: E402
from loso_seeds import fold_names, probs_of  # noqa: E402


def draws(spec: str, recipes: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """Each distinct set of runs with one run per ``+``-separated recipe
    (a recipe named twice draws two different seeds)."""
    parts = spec.split("+")
    unknown = [p for p in parts if p not in recipes]
    if unknown:
        raise SystemExit(f"--ensemble {spec}: no --recipe named {', '.join(unknown)}")
    combos = {tuple(sorted(c)) for c in itertools.product(*(recipes[p] for p in parts)) if len(set(c)) == len(c)}
    if not combos:
        raise SystemExit(f"--ensemble {spec}: its recipes have too few runs to draw distinct ones")
    return sorted(combos)


def evaluate(out: Path, specs: list[str], recipes: dict[str, list[str]]) -> dict:
    folds = fold_names(out)
    groups = [f for f in folds if f != "dev"] or folds  # bench/loso.py --in-domain: its one test is "dev"
    truth = {f: read(out / "folds" / f / "test.parquet")["label"].to_numpy() for f in folds}
    cache: dict[tuple[str, str], np.ndarray] = {}

    def probs(run: str, fold: str) -> np.ndarray:
        if (run, fold) not in cache:
            cache[(run, fold)] = probs_of(out, run, fold)
        return cache[(run, fold)]

    peer_f1 = {p: {f: fold_metrics(truth[f], probs(p, f))["macro_f1"] for f in folds} for p in PEERS}
    better_peer = {f: max(peer_f1[p][f] for p in PEERS) for f in folds}
    peers_mean = float(np.mean([np.mean([peer_f1[p][g] for g in groups]) for p in PEERS]))
    rows = {}
    for spec in specs:
        runs = []
        for combo in draws(spec, recipes):
            metrics = {f: fold_metrics(truth[f], np.mean([probs(r, f) for r in combo], axis=0)) for f in folds}
            f1 = {f: m["macro_f1"] for f, m in metrics.items()}
            runs.append({
                "runs": combo,
                "f1": f1,
                "neutral": {f: metrics[f]["predicted_share"][0] for f in folds},
                "margin": 100 * (float(np.mean([f1[g] for g in groups])) - peers_mean),
                "at_or_above": sum(f1[g] >= better_peer[g] for g in groups),
                "worst": 100 * min(f1[g] - better_peer[g] for g in groups),
            })
        rows[spec] = runs
    true_neutral = {f: fold_metrics(truth[f], probs(PEERS[0], f))["true_share"][0] for f in folds}
    return {"folds": folds, "groups": groups, "better_peer": better_peer, "peers_mean": peers_mean, "rows": rows,
            "true_neutral": true_neutral}


def render(result: dict) -> str:
    folds, groups, better = result["folds"], result["groups"], result["better_peer"]
    lines = [
        "| ensemble | draws | mean − peers' mean: mean [min, max] | groups ≥ better peer: mean (min) | worst margin: mean (min) | dev |",
        "|---|---:|---|---|---|---:|",
    ]
    for spec, runs in result["rows"].items():
        margin = [r["margin"] for r in runs]
        at = [r["at_or_above"] for r in runs]
        worst = [r["worst"] for r in runs]
        dev = np.mean([r["f1"]["dev"] for r in runs]) if "dev" in folds else float("nan")
        lines.append(f"| {spec} | {len(runs)} | {np.mean(margin):+.2f} [{min(margin):+.2f}, {max(margin):+.2f}] | "
                     f"{np.mean(at):.1f}/{len(groups)} ({min(at)}) | {np.mean(worst):+.1f} ({min(worst):+.1f}) | {dev:.4f} |")
    lines += ["", "Mean over the draws of each group's margin to the better peer (points), and of predicted 中评 (%, true first):", "",
              "| ensemble | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    for spec, runs in result["rows"].items():
        lines.append(f"| {spec} | " + " | ".join(
            f"{100 * (np.mean([r['f1'][g] for r in runs]) - better[g]):+.1f}" for g in groups) + " |")
    lines.append("| 中评 true | " + " | ".join(f"{100 * result['true_neutral'][g]:.0f}" for g in groups) + " |")
    for spec, runs in result["rows"].items():
        lines.append(f"| 中评 {spec} | " + " | ".join(
            f"{100 * np.mean([r['neutral'][g] for r in runs]):.0f}" for g in groups) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/loso-10k"), help="bench/loso.py's --out")
    parser.add_argument("--recipe", action="append", required=True, metavar="NAME=RUN,RUN,...",
                        help="a recipe's runs (bench/loso.py recipe names, one per seed)")
    parser.add_argument("--ensemble", action="append", required=True, metavar="NAME+NAME...",
                        help="recipes to average, one run of each per draw (a single NAME: the recipe alone)")
    args = parser.parse_args(argv)
    recipes = {}
    for spec in args.recipe:
        name, _, runs = spec.partition("=")
        recipes[name] = [r for r in runs.split(",") if r]
    print(render(evaluate(args.out, args.ensemble, recipes)))


if __name__ == "__main__":
    main()
