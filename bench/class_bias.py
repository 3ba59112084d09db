"""Class biases on and off, for one trained model, on one test file:

    python bench/class_bias.py MODEL TRAINING_FILE TEST_FILE

Recomputes the model's validation split (seed and fraction from its card), takes the temperature-scaled logits (log-probabilities minus the
fitted biases: the softmax's per-row constant does not change an argmax),
and prints one JSON line: accuracy, macro-F1 and neutral recall on TEST_FILE
with the model's own biases ("validation-prior"), with none ("no-bias": what
``train`` writes without --class-bias), and with biases refitted on a
class-balanced resample of the validation split ("balanced-prior")."""
import json
import sys

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from sentiscore.artifacts import read_meta, resolve_model_path
from sentiscore.calibration import fit_class_bias
from sentiscore.config import TrainConfig
from sentiscore.pipeline import Scorer
from sentiscore.train import _split, load_labelled

def weighted_fit(z, y, k, weights):
    # fit_class_bias on a class-balanced resample (deterministic: repeat rows by weight)
    reps = np.maximum(1, np.round(weights / weights.min()).astype(int))
    idx = np.repeat(np.arange(y.size), reps[y])
    return fit_class_bias(z[idx], y[idx], k)

def logits_of(scorer, texts, bias):
    """Temperature-scaled logits per row (up to a per-row constant), and
    which rows got a label (blank texts get none)."""
    prepared = scorer.preprocess(texts)
    probs = scorer.forward(prepared, explain=False).probs
    z = np.log(np.clip(probs, 1e-12, 1)) - bias
    rows = prepared.row_to_unique
    return z[np.maximum(rows, 0)], rows >= 0

def main(model, train_path, test_path):
    card = read_meta(resolve_model_path(model))["training"]
    cfg = TrainConfig(seed=card["seed"], val_fraction=card["val_fraction"])
    texts, y, _, extras = load_labelled(train_path, "txt", "label", cfg.labels)
    _, val_idx = _split(y, extras, cfg, "source", train_path)
    tt, ty, _, _ = load_labelled(test_path, "txt", "label", cfg.labels)
    old = np.array(card["calibration"]["bias"])
    with Scorer.from_model(model, workers=2) as s:
        zv, okv = logits_of(s, [texts[i] for i in val_idx], old)
        zt, okt = logits_of(s, tt, old)
    zv, yv = zv[okv], y[val_idx][okv]
    counts = np.bincount(yv, minlength=3)
    w = counts.sum() / (3 * counts)
    new = weighted_fit(zv, yv, 3, w)
    out = {"model": model, "old_bias": old.round(2).tolist(), "balanced_bias": new.round(2).tolist()}
    for name, b in (("validation-prior", old), ("balanced-prior", new), ("no-bias", np.zeros(3))):
        pred = (zt + b).argmax(1)
        out[name] = {"acc": round(accuracy_score(ty[okt], pred[okt]), 4), "macro_f1": round(f1_score(ty[okt], pred[okt], average="macro"), 4),
                     "neutral_recall": round(float(((pred == 1) & (ty == 1) & okt).sum() / ((ty == 1) & okt).sum()), 3)}
    print(json.dumps(out))

if __name__ == "__main__":
    main(*sys.argv[1:4])
