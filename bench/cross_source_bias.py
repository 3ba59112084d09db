"""A 中评 logit bias fitted on held-out sources, rescored from bench/loso.py's
cached fold probabilities (no retraining).

    python bench/cross_source_bias.py --out build/loso-10k --system newdef --system newdef-seed14

Issue #14 asks whether a bias fitted on a held-out source, instead of on a
random validation split, transfers. For each group left out, the bias is the
one (on a grid of log-factors) that maximises the mean macro-F1 over the
*other* groups' leave-one-source-out predictions: each of those came from a
model that never saw its own group, so the bias learns how the recipe errs on
unfamiliar sources, and the group it is applied to never takes part in
fitting it. Prints, per system, each group's fitted bias, macro-F1 and
predicted 中评 share before and after, and the LOSO mean.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from loso import fold_metrics, label_column, read  # noqa: E402

from sentiscore.calibration import shift_priors  # noqa: E402

NEUTRAL_COLUMN = label_column(0)  # 中评's column in the cached probabilities
GRID = np.round(np.arange(-3.0, 3.0001, 0.1), 1)


def with_neutral_bias(probs: np.ndarray, bias: float) -> np.ndarray:
    """Probabilities with 中评's logit moved by ``bias`` (rows without a label stay zero)."""
    log_shift = np.zeros(probs.shape[1])
    log_shift[NEUTRAL_COLUMN] = bias
    return shift_priors(probs, log_shift)


def fit_elsewhere(table: dict[str, dict[float, dict]], left_out: str) -> float:
    """The grid bias with the best mean macro-F1 over every group but ``left_out`` (ties: the smaller bias)."""
    others = [group for group in table if group != left_out]
    return max(GRID, key=lambda b: (np.mean([table[g][b]["macro_f1"] for g in others]), -abs(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/loso-10k"), help="bench/loso.py's --out")
    parser.add_argument("--system", action="append", required=True, help="a recipe or ensemble cached there")
    args = parser.parse_args()
    print("| system | group | bias | macro-F1 before | after | 中评 % before | after | true |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for system in args.system:
        groups = sorted(p.stem for p in (args.out / "probs" / system).glob("*.parquet") if p.stem != "dev")
        table = {}
        for group in groups:
            y = read(args.out / "folds" / group / "test.parquet")["label"].to_numpy()
            probs = pd.read_parquet(args.out / "probs" / system / f"{group}.parquet").to_numpy()
            table[group] = {b: fold_metrics(y, with_neutral_bias(probs, b)) for b in GRID}
        before, after = [], []
        for group in groups:
            bias = fit_elsewhere(table, group)
            old, new = table[group][0.0], table[group][bias]
            before.append(old["macro_f1"])
            after.append(new["macro_f1"])
            print(f"| {system} | {group} | {bias:+.1f} | {old['macro_f1']:.4f} | {new['macro_f1']:.4f} | "
                  f"{old['predicted_share'][0] * 100:.0f} | {new['predicted_share'][0] * 100:.0f} | {old['true_share'][0] * 100:.0f} |")
        print(f"| {system} | **LOSO mean** | | {np.mean(before):.4f} | {np.mean(after):.4f} | | | |")


if __name__ == "__main__":
    main()
