"""Prior adaptation where its assumption holds: the dev split (rows of the
training sources, never trained on) resampled to other label mixes, scored
as is, with EM (``score --adapt-priors``) and with BBSE (``--prior-estimator
bbse``). Reads bench/loso.py's cached dev-fold probabilities; no retraining.

    python bench/label_shift.py --out build/loso-bbse --system ens-idf-ind --system wd-idf
    python bench/label_shift.py --model zh-fast --dev build/splits-all/dev.parquet

For each target mix (负评 / 中评 / 正评 shares) and seed, ``--rows`` dev rows
are drawn with replacement from each label in proportion; reported: macro-F1
over the labels present, accuracy, and the predicted 中评 share, averaged over
the seeds. With ``--model``, a trained model (a built-in one) instead: each
source group's dev rows as one file, the mix its source gives them, scored
as ``score`` does, then adapted with the card's reference prior and
confusion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import LABELS, adapted_probs, fold_metrics, read  # noqa: E402

MIXES = {"training-like": (0.43, 0.12, 0.45), "mostly 中评": (0.15, 0.70, 0.15), "no 中评": (0.5, 0.0, 0.5),
         "mostly 负评": (0.75, 0.10, 0.15), "mostly 正评": (0.10, 0.10, 0.80)}


def by_source(model: str, dev: Path) -> None:
    """Each source group's dev rows as one file, scored by ``model`` as is,
    with EM and with BBSE."""
    from quality import groups_of
    from sentiscore.pipeline import Scorer

    frame = read(dev)
    with Scorer.from_model(model) as scorer:
        scored = scorer.predict(frame["txt"].tolist())
        card = scorer.card
    values = [int(v) for v, _ in card.labels]
    probs = np.zeros((len(frame), LABELS.size))
    for (value, name) in card.labels:
        probs[:, list(LABELS).index(int(value))] = scored[f"prob_{name}"].fillna(0).to_numpy()
    reference, confusion = list(card.reference_prior), card.confusion.tolist()
    print(f"{card.name}@{card.hash}: {dev} by source group, each group one file\n")
    print("| group (rows; true 负 / 中 / 正 %) | as is: macro-F1 / 中评 % | EM | BBSE |")
    print("|---|---|---|---|")
    groups = groups_of(frame).to_numpy()
    for group in sorted(set(groups)):
        rows = groups == group
        y, p = frame["label"].to_numpy()[rows], probs[rows]
        true = " / ".join(f"{100 * np.mean(y == v):.0f}" for v in LABELS)
        cells = []
        for adapted in (p, adapted_probs(p, reference, values), adapted_probs(p, reference, values, confusion)):
            m = fold_metrics(y, adapted)
            cells.append(f"{m['macro_f1']:.4f} / {100 * m['predicted_share'][0]:.0f}")
        print(f"| {group} ({rows.sum():,}; {true}) | " + " | ".join(cells) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="a bench/loso.py output folder")
    parser.add_argument("--system", action="append", default=[])
    parser.add_argument("--model", help="score --dev's source groups with this model instead")
    parser.add_argument("--dev", type=Path, default=Path("build/splits-all/dev.parquet"))
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.model:
        by_source(args.model, args.dev)
        return
    if not args.out or not args.system:
        parser.error("--out and --system, or --model")

    y_all = read(args.out / "folds" / "dev" / "test.parquet")["label"].to_numpy()
    print(f"dev rows: {y_all.size:,}; {args.rows:,} drawn per mix and seed, {args.seeds} seeds\n")
    print("| system | mix (true 负 / 中 / 正) | none: macro-F1 / acc / 中评 % | EM | BBSE |")
    print("|---|---|---|---|---|")
    for system in args.system:
        path = args.out / "probs" / system / "dev.parquet"
        probs_all = pd.read_parquet(path).to_numpy()
        extra = json.loads(path.with_suffix(".json").read_text())
        if len(extra.get("labels") or LABELS) != LABELS.size or not extra.get("confusion"):
            raise SystemExit(f"{path}: needs a 3-label model with a validation confusion (rerun bench/loso.py)")
        for name, mix in MIXES.items():
            cells = {"none": [], "em": [], "bbse": []}
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                counts = np.round(np.asarray(mix) * args.rows).astype(int)
                rows = np.concatenate([rng.choice(np.flatnonzero(y_all == v), n) for v, n in zip(LABELS, counts) if n])
                y, probs = y_all[rows], probs_all[rows]
                variants = {"none": probs, "em": adapted_probs(probs, extra["reference_prior"], extra.get("labels")),
                            "bbse": adapted_probs(probs, extra["reference_prior"], extra.get("labels"), extra["confusion"])}
                for key, p in variants.items():
                    m = fold_metrics(y, p)
                    cells[key].append((m["macro_f1"], m["accuracy"], m["predicted_share"][0]))
            fmt = lambda vals: " / ".join(f"{v:.4f}" if i < 2 else f"{100 * v:.0f}" for i, v in enumerate(np.mean(vals, axis=0)))  # noqa: E731
            true = " / ".join(f"{100 * s:.0f}" for s in mix)
            print(f"| {system} | {name} ({true}) | {fmt(cells['none'])} | {fmt(cells['em'])} | {fmt(cells['bbse'])} |")


if __name__ == "__main__":
    main()
