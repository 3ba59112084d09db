"""Prior adaptation variants rescored from bench/loso.py's cached fold
probabilities (no retraining): full EM (what ``score --adapt-priors`` does),
one EM step, and MAP-EM with a Dirichlet prior centred on the model's
reference prior, worth ALPHA × the file's rows.

    python bench/em_variants.py --out build/loso-10k --system ens-idf-ind

Prints each fold's macro-F1 and predicted 中评 share, and the LOSO mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from loso import fold_metrics, read  # noqa: E402

from sentiscore.calibration import prior_log_shift, shift_priors  # noqa: E402

VARIANTS = {"none": None, "em": (0.0, 200), "em-1step": (0.0, 1), "map-a0.3": (0.3, 200), "map-a1": (1.0, 200), "map-a3": (3.0, 200)}


def map_em(probs: np.ndarray, reference, alpha: float, iterations: int) -> np.ndarray:
    """Posteriors under the file's re-estimated priors; ``alpha`` 0 is plain EM."""
    reference = np.asarray(reference, float)
    prior = reference.copy()
    for _ in range(iterations):
        posterior = shift_priors(probs, prior_log_shift(prior, reference))
        new = (posterior.sum(axis=0) + alpha * len(probs) * reference) / (len(probs) * (1 + alpha))
        converged = np.abs(new - prior).max() < 1e-6
        prior = new
        if converged:
            break
    return shift_priors(probs, prior_log_shift(prior, reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/loso-10k"), help="bench/loso.py's --out")
    parser.add_argument("--system", required=True, help="a recipe or ensemble cached there")
    args = parser.parse_args()
    folds = sorted(p.name for p in (args.out / "folds").iterdir() if (args.out / "probs" / args.system / f"{p.name}.parquet").is_file())
    print("| variant | " + " | ".join(folds) + " | LOSO mean |")
    print("|---|" + "---:|" * (len(folds) + 1))
    for name, spec in VARIANTS.items():
        cells, loso = [], []
        for fold in folds:
            y = read(args.out / "folds" / fold / "test.parquet")["label"].to_numpy()
            path = args.out / "probs" / args.system / f"{fold}.parquet"
            probs = pd.read_parquet(path).to_numpy()
            if spec is not None:
                scored = probs.sum(axis=1) > 0
                probs = probs.copy()
                probs[scored] = map_em(probs[scored], json.loads(path.with_suffix(".json").read_text())["reference_prior"], *spec)
            metrics = fold_metrics(y, probs)
            cells.append(f"{metrics['macro_f1']:.3f} ({(probs.argmax(axis=1) == 1).mean() * 100:.0f}%)")
            if fold != "dev":
                loso.append(metrics["macro_f1"])
        print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(loso):.4f} |")


if __name__ == "__main__":
    main()
