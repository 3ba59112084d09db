"""Record the validation confusion matrix that ``score --adapt-priors
--prior-estimator bbse`` needs in the card of a model trained before
sentiscore recorded it, from the same validation split its training held out.

    python scripts/fit_confusion.py MODEL TRAIN_FILE

A single model gains ``training.calibration.confusion``, as ``sentiscore
train`` writes it. An ensemble's members must share one validation split
(the same training file, seed and split settings, as zh-fast's do); each
member's recorded validation macro-F1 is reproduced first, then the
ensemble's own confusion (of its mean probabilities, as ``score`` computes
them) goes into a ``calibration`` section of the ensemble's card, and the
members' cards are left alone. Rows are predicted labels, columns true ones,
over the validation rows that have tokens, cascade off (as training scores
them). The weights are untouched; meta.json and the manifest are renewed, so
the model's hash changes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys

from sentiscore.artifacts import read_card, verify, write_card
from sentiscore.calibration import joint_confusion
from sentiscore.errors import TrainingError
from sentiscore.pipeline import Scorer
from sentiscore.train import reproduced_validation

SPLIT_KEYS = (("data", "sha256"), ("data", "val_rows"), ("training", "seed"), ("training", "val_fraction"), ("training", "val_source"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("train_file")
    parser.add_argument("--text-column", default="txt")
    parser.add_argument("--label-column", default="label")
    args = parser.parse_args()

    card = read_card(args.model)
    singles = card.members or (card,)
    splits = {tuple((m.raw.get(section) or {}).get(key) for section, key in SPLIT_KEYS) for m in singles}
    if len(splits) > 1:
        print(f"{card.name}: its members were not trained on one validation split ({', '.join('.'.join(k) for k in SPLIT_KEYS)} differ)",
              file=sys.stderr)
        return 1
    try:
        for member in singles:
            with Scorer.from_card(member, cascade=False, top_k=0) as scorer:
                texts, y, probs, labelled = reproduced_validation(scorer, member, args.train_file, args.text_column, args.label_column)
    except TrainingError as exc:
        print(exc, file=sys.stderr)
        return 1
    if card.members:
        with Scorer.from_card(card, cascade=False, top_k=0) as scorer:
            probs = scorer.predict(texts)[[f"prob_{name}" for _, name in card.labels]].to_numpy()
    confusion = joint_confusion(probs[labelled].argmax(axis=1), y[labelled], len(card.labels)).round(6).tolist()
    meta = verify(card.path)
    added = f"{_dt.date.today().isoformat()}, after training, by scripts/fit_confusion.py"
    if card.members:
        meta["calibration"] = {**(meta.get("calibration") or {}), "confusion": confusion, "confusion_added": added}
    else:
        meta["training"]["calibration"].update(confusion=confusion, confusion_added=added)
    write_card(card.path, meta)
    print(f"{card.name}: validation confusion over {int(labelled.sum()):,} rows (rows predicted, columns true): {confusion}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
