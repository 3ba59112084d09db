"""How much a model's 中评 probability knows about a left-out group's 中评,
and what knowing the group's label shares is worth, on ``bench/loso.py``
caches (no retraining):

    python bench/neutral_signal.py build/loso-bbse build/loso-s29 build/loso-s41 \
        --system ens-idf-ind --out bench/results/DATE/neutral-signal.md

For every group, from each fold's cached probabilities:

- ``AUC``: how well the 中评 probability ranks the group's 中评 rows above its
  others (0.5: no better than chance), for the system and the char TF-IDF peer;
  on the groups left out, and on each group's dev rows (a fold that trained on
  that group);
- macro-F1 and the predicted 中评 share as is, and under the group's true label
  shares given as ``score --priors`` applies them: ``reweight`` (every
  posterior reweighted by share / the model's reference prior, from the fold
  model's card) and ``match`` (``--priors-mode match``: offsets under which
  the group's labels come out in those shares,
  ``calibration.share_matching_shift``). The char peer's reference prior is
  its fold's training label shares;
- the shares estimated from a labelled sample of N rows of the group (what a
  team can label by hand), applied to the group's other rows (matched on
  them); mean over ``--draws`` seeded draws, against the model as is on the
  same rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loso import GROUPS, LABELS, fold_metrics, load_fold  # noqa: E402

from sentiscore.calibration import prior_log_shift, share_matching_shift, shift_priors  # noqa: E402

PEER = "tfidf-char-lr"


def shares(labels: np.ndarray) -> np.ndarray:
    return np.array([np.mean(labels == v) for v in LABELS])


def given(probs: np.ndarray, prior: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return shift_priors(probs, prior_log_shift(prior, reference))


def matched(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    return shift_priors(probs, share_matching_shift(probs, prior))


def neutral_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    neutral = labels == 0
    return float(roc_auc_score(neutral, probs[:, 1])) if 0 < neutral.sum() < neutral.size else None


class Fold:
    def __init__(self, cache: Path, system: str, fold: str):
        self.test, self.probs = load_fold(cache, fold, (system, PEER))
        self.labels = self.test["label"].to_numpy()
        card = json.loads((cache / "probs" / system / f"{fold}.json").read_text())
        train_labels = pd.read_parquet(cache / "folds" / fold / "train.parquet", columns=["label"])["label"].to_numpy()
        self.reference = {system: np.asarray(card["reference_prior"], np.float64), PEER: shares(train_labels)}


def group_row(fold: Fold, dev: Fold | None, group: str, system: str, sample_rows: list[int], draws: int, seed: int) -> dict:
    y, probs = fold.labels, fold.probs[system]
    true = shares(y)
    row = {"group": group, "true 中评": true[1]}
    row["AUC"] = neutral_auc(y, probs)
    row["AUC peer"] = neutral_auc(y, fold.probs[PEER])
    if dev is not None:
        mine = dev.test["source"].str.split(":").str[0].to_numpy() == group
        row["AUC in dev"] = neutral_auc(dev.labels[mine], dev.probs[system][mine])
    as_is = fold_metrics(y, probs)
    known = fold_metrics(y, given(probs, true, fold.reference[system]))
    known_matched = fold_metrics(y, matched(probs, true))
    row.update({"F1": as_is["macro_f1"], "中评": as_is["predicted_share"][0],
                "F1 reweight": known["macro_f1"], "中评 reweight": known["predicted_share"][0],
                "F1 match": known_matched["macro_f1"], "中评 match": known_matched["predicted_share"][0],
                "peer F1": fold_metrics(y, fold.probs[PEER])["macro_f1"],
                "peer F1 reweight": fold_metrics(y, given(fold.probs[PEER], true, fold.reference[PEER]))["macro_f1"],
                "peer F1 match": fold_metrics(y, matched(fold.probs[PEER], true))["macro_f1"]})
    rng = np.random.default_rng(seed)
    for n in sample_rows:
        gains, neutral = [], []
        for _ in range(draws):
            picked = np.zeros(y.size, bool)
            picked[rng.choice(y.size, n, replace=False)] = True
            rest = ~picked
            scored = fold_metrics(y[rest], matched(probs[rest], shares(y[picked])))
            gains.append(scored["macro_f1"] - fold_metrics(y[rest], probs[rest])["macro_f1"])
            neutral.append(scored["predicted_share"][0])
        row[f"gain, {n} labelled"] = float(np.mean(gains))
        row[f"中评, {n} labelled"] = float(np.mean(neutral))
    return row


def render(cache: Path, rows: list[dict], sample_rows: list[int]) -> str:
    def num(value, points=False, share=False):
        if value is None:
            return "—"
        return f"{100 * value:.0f}%" if share else f"{100 * value:+.1f}" if points else f"{value:.3f}"

    head = ["group (true 中评)", "AUC left out (peer)", "AUC in dev", "as is: F1 / 中评", "shares given, reweight: F1 / 中评",
            "shares given, match: F1 / 中评", "char peer: as is / reweight / match"] + [
            f"{n} labelled rows, match: F1 gain / 中评" for n in sample_rows]
    lines = [f"### {cache}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['group']} ({num(r['true 中评'], share=True)})",
                 "—" if r["AUC"] is None else f"{r['AUC']:.3f} ({r['AUC peer']:.3f})",
                 "—" if r.get("AUC in dev") is None else f"{r['AUC in dev']:.3f}",
                 f"{r['F1']:.4f} / {num(r['中评'], share=True)}",
                 f"{r['F1 reweight']:.4f} / {num(r['中评 reweight'], share=True)}",
                 f"{r['F1 match']:.4f} / {num(r['中评 match'], share=True)}",
                 f"{r['peer F1']:.4f} / {r['peer F1 reweight']:.4f} / {r['peer F1 match']:.4f}"]
        cells += [f"{num(r[f'gain, {n} labelled'], points=True)} / {num(r[f'中评, {n} labelled'], share=True)}" for n in sample_rows]
        lines.append("| " + " | ".join(cells) + " |")
    mean = lambda key: np.mean([r[key] for r in rows])  # noqa: E731
    lines += ["", f"LOSO mean: as is {mean('F1'):.4f}, shares given: reweight {mean('F1 reweight'):.4f}, match "
              f"{mean('F1 match'):.4f}; char peer {mean('peer F1'):.4f}, reweight {mean('peer F1 reweight'):.4f}, "
              f"match {mean('peer F1 match'):.4f}; the mean gain on the rows a labelled sample leaves, matched: "
              + ", ".join(f"{n} rows {100 * mean(f'gain, {n} labelled'):+.2f}" for n in sample_rows), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("caches", type=Path, nargs="+", help="bench/loso.py --out directories")
    parser.add_argument("--system", default="ens-idf-ind", help="a recipe or ensemble of those runs")
    parser.add_argument("--sample-rows", type=int, nargs="*", default=[100, 300])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    parts = []
    for cache in args.caches:
        dev = Fold(cache, args.system, "dev") if (cache / "folds" / "dev").is_dir() else None
        rows = [group_row(Fold(cache, args.system, g), dev, g, args.system, args.sample_rows, args.draws, args.seed) for g in GROUPS]
        parts.append(render(cache, rows, args.sample_rows))
        if dev is not None:
            parts.append(f"AUC of 中评 on the whole dev split: {neutral_auc(dev.labels, dev.probs[args.system]):.3f} "
                         f"(char peer {neutral_auc(dev.labels, dev.probs[PEER]):.3f})\n")
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
