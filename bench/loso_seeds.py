"""Recipes over several seeds, from bench/loso.py's cache: each seed's
macro-F1, their mean, and the ensemble of the seeds (their probabilities
averaged), against the two TF-IDF peers trained on the same rows.

    python bench/loso_seeds.py --out build/loso-10k \
        --recipe "wd-idf=wd-idf,wd-idf-seed14,wd-idf-seed15" \
        --recipe "wd-idf-ema=wd-idf-ema,wd-idf-ema-seed14,wd-idf-ema-seed15"

One retraining changes a group's macro-F1 by up to several points (BENCHMARKS.md,
"retraining noise"), so a recipe is compared by its seeds' mean; the
ensemble says what averaging the seeds' models would add (and costs one
deep path per seed at scoring). Writes nothing; prints Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import PEERS, fold_metrics, read  # noqa: E402


def fold_names(out: Path) -> list[str]:
    names = sorted(p.name for p in (out / "folds").iterdir() if (p / "test.parquet").is_file())
    return (["dev"] if "dev" in names else []) + [n for n in names if n != "dev"]


def probs_of(out: Path, system: str, fold: str) -> np.ndarray:
    path = out / "probs" / system / f"{fold}.parquet"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run bench/loso.py for {system} first")
    return pd.read_parquet(path).to_numpy()


def summarise(out: Path, recipes: dict[str, list[str]]) -> dict:
    """{column: {fold: metrics}} for the peers, each seed, each recipe's
    ensemble; plus each recipe's per-fold seed-mean macro-F1."""
    folds = fold_names(out)
    truth = {f: read(out / "folds" / f / "test.parquet")["label"].to_numpy() for f in folds}
    columns: dict[str, dict] = {p: {f: fold_metrics(truth[f], probs_of(out, p, f)) for f in folds} for p in PEERS}
    seed_means: dict[str, dict[str, float]] = {}
    for name, runs in recipes.items():
        for run in runs:
            columns[run] = {f: fold_metrics(truth[f], probs_of(out, run, f)) for f in folds}
        if len(runs) < 2:
            continue
        seed_means[name] = {f: float(np.mean([columns[r][f]["macro_f1"] for r in runs])) for f in folds}
        columns[f"{name} ensemble"] = {f: fold_metrics(truth[f], np.mean([probs_of(out, r, f) for r in runs], axis=0)) for f in folds}
    return {"folds": folds, "columns": columns, "seed_means": seed_means}


def render(summary: dict) -> str:
    folds, columns, seed_means = summary["folds"], summary["columns"], summary["seed_means"]
    groups = [f for f in folds if f != "dev"]
    f1 = {name: {f: m["macro_f1"] for f, m in by_fold.items()} for name, by_fold in columns.items()}
    f1.update({f"{name} seed mean": means for name, means in seed_means.items()})
    order = list(PEERS) + [c for c in f1 if c not in PEERS]
    better_peer = {f: max(f1[p][f] for p in PEERS) for f in folds}
    peers_mean = float(np.mean([np.mean([f1[p][g] for g in groups]) for p in PEERS]))

    lines = ["| test | " + " | ".join(order) + " |", "|---|" + "---:|" * len(order)]
    for f in folds:
        lines.append(f"| {f} | " + " | ".join(f"{f1[c][f]:.4f}" for c in order) + " |")
    means = {c: float(np.mean([f1[c][g] for g in groups])) for c in order}
    lines.append("| **LOSO mean** | " + " | ".join(f"{means[c]:.4f}" for c in order) + " |")
    lines.append("| mean − peers' mean | " + " | ".join(f"{100 * (means[c] - peers_mean):+.2f}" for c in order) + " |")
    lines.append("| groups ≥ better peer | " + " | ".join(
        f"{sum(f1[c][g] >= better_peer[g] for g in groups)}/{len(groups)}" for c in order) + " |")
    lines.append("| worst margin to better peer | " + " | ".join(
        f"{100 * min(f1[c][g] - better_peer[g] for g in groups):+.1f}" for c in order) + " |")

    share_columns = [c for c in order if c in columns]
    lines += ["", "Predicted 中评 share against the true share (%), groups and dev:", "",
              "| test | true | " + " | ".join(share_columns) + " |", "|---|---:|" + "---:|" * len(share_columns)]
    for f in folds:
        true = columns[PEERS[0]][f]["true_share"][0]
        lines.append(f"| {f} | {100 * true:.0f} | " + " | ".join(
            f"{100 * columns[c][f]['predicted_share'][0]:.0f}" for c in share_columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/loso"), help="bench/loso.py's --out")
    parser.add_argument("--recipe", action="append", required=True,
                        help="NAME=RUN,RUN,... : the bench/loso.py recipe names of one recipe's seeds")
    args = parser.parse_args(argv)
    recipes = {}
    for spec in args.recipe:
        name, _, runs = spec.partition("=")
        recipes[name] = [r for r in runs.split(",") if r]
    print(render(summarise(args.out, recipes)))


if __name__ == "__main__":
    main()
