"""Calibration of sentiscore models on the dev split: expected calibration
error (ECE) before and after the model's temperature scaling.

    python bench/calibration.py --model zh-fast [--model DIR ...] --data build/splits/dev.parquet [--json OUT]

Every sentiscore model ends in ``softmax(logits / T + b)``: a temperature T
(fitted on the training run's validation split for honest confidences) and
per-class logit biases b (fitted there for macro-F1: decision thresholds for
the scarce neutral class), both recorded in the card
(``training.calibration``). The shipped probabilities p give back the raw
logits up to a per-row constant, ``(log p - b) * T``, so one scoring pass
yields the dev ECE of:

* ``raw``: softmax(logits), no calibration at all;
* ``temperature``: softmax(logits / T), temperature scaling only;
* ``shipped``: softmax(logits / T + b), what ``sentiscore score`` outputs;
* ``dev-fitted T``: softmax(logits / T_dev) with T_dev fitted on dev itself
  (an oracle, for reference: the best any single temperature could do).

ECE: 15 equal-width bins of the top probability, over the rows that got a
label, as ``sentiscore.calibration.expected_calibration_error`` computes the
card's validation ECE (``sentiscore evaluate`` shows 10 bins).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

UNSCORED = 99  # label value for rows the model gave no label (always wrong)
CHUNK = 10_000


def dev_predictions(model: str, texts: list[str]) -> dict:
    """Score ``texts`` with a sentiscore model: predicted label values (ints,
    UNSCORED where no label), class probabilities (NaN rows where no label),
    the label values in probability-column order, and the card."""
    import pyarrow as pa

    from sentiscore.pipeline import Scorer

    scorer = Scorer.from_model(model, top_k=0)
    try:
        labels = scorer.labels
        value_of = {name: int(value) for value, name in labels}
        preds, probs = [], []
        for start in range(0, len(texts), CHUNK):
            batch = pa.RecordBatch.from_arrays([pa.array(texts[start:start + CHUNK], pa.string())], names=["txt"])
            out = scorer.score_batch(batch, "txt", keep_columns=[])
            preds += [value_of[name] if name is not None else UNSCORED for name in out.column("label").to_pylist()]
            probs.append(np.column_stack([
                out.column(f"prob_{name}").to_numpy(zero_copy_only=False).astype(np.float64) for _, name in labels
            ]))
        return {
            "model": scorer.loaded.name,
            "model_hash": scorer.loaded.hash,
            "values": [int(v) for v, _ in labels],
            "pred": np.asarray(preds, np.int64),
            "probs": np.concatenate(probs) if probs else np.zeros((0, len(labels))),
            "card_calibration": scorer.card.training.get("calibration") or {},
        }
    finally:
        scorer.close()


def calibration_report(scored: dict, y_values) -> dict:
    """ECE raw / temperature only / shipped / with a dev-fitted temperature."""
    from sentiscore.calibration import expected_calibration_error, fit_temperature, softmax

    probs = scored["probs"]
    keep = ~np.isnan(probs).any(axis=1)
    index = {v: i for i, v in enumerate(scored["values"])}
    y = np.array([index[int(v)] for v in np.asarray(y_values)[keep]], np.int64)
    card = scored["card_calibration"]
    temperature = float(card.get("temperature", 1.0))
    bias = np.asarray(card.get("bias") or np.zeros(probs.shape[1]), np.float64)
    p = probs[keep]
    raw = (np.log(np.maximum(p, 1e-30)) - bias) * temperature
    dev_t = fit_temperature(raw, y)

    def ece(q):
        return round(expected_calibration_error(q, y), 4)

    return {
        "rows": int(keep.sum()),
        "unscored": int((~keep).sum()),
        "temperature": temperature,
        "bias": [round(float(b), 4) for b in bias],
        "validation_ece_before": card.get("validation_ece_before"),
        "validation_ece_after": card.get("validation_ece_after"),
        "dev_ece_raw": ece(softmax(raw)),
        "dev_ece_temperature": ece(softmax(raw / temperature)),
        "dev_ece_shipped": ece(p),
        "dev_fitted_temperature": round(dev_t, 4),
        "dev_ece_dev_fitted_temperature": ece(softmax(raw / dev_t)),
        "dev_accuracy_raw": round(float(np.mean(raw.argmax(axis=1) == y)), 4),
        "dev_accuracy_shipped": round(float(np.mean(p.argmax(axis=1) == y)), 4),
    }


def render(results: dict) -> str:
    lines = [
        "| model | T (card) | validation ECE before → after (card) | dev ECE raw | dev ECE, T only | dev ECE shipped (T, and class biases if the card has them) | T fitted on dev (oracle) → dev ECE |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        card = (f"{r['validation_ece_before']:.4f} → {r['validation_ece_after']:.4f}"
                if r.get("validation_ece_before") is not None else "(not calibrated)")
        lines.append(
            f"| {name} | {r['temperature']:g} | {card} | {r['dev_ece_raw']:.4f} | {r['dev_ece_temperature']:.4f} | "
            f"{r['dev_ece_shipped']:.4f} | {r['dev_fitted_temperature']:g} → {r['dev_ece_dev_fitted_temperature']:.4f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="Model directory or built-in name (repeatable).")
    parser.add_argument("--data", required=True, type=Path, help="Labelled Parquet file (txt, label).")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    df = pd.read_parquet(args.data, columns=["txt", "label"])
    texts = df["txt"].fillna("").astype(str).tolist()
    results = {}
    for model in args.model:
        results[model] = calibration_report(dev_predictions(model, texts), df["label"].to_numpy())
        print(f"{model}: dev ECE {results[model]['dev_ece_shipped']:.4f}", file=sys.stderr, flush=True)
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
