"""Fit the scoring cascade of a wide-deep model trained before sentiscore
fitted one at training time (0.2's zh-fast and zh-elmo were), on the same
validation split its training held out, and add it to the model's card.

    python scripts/fit_cascade.py MODEL TRAIN_FILE [--max-label-change 0.0005] [--min-threshold 0.8]

The weights are untouched; meta.json gains a ``cascade`` section and the
manifest is renewed (so the model's hash changes). Before fitting, the
validation split is checked against the card: same file (sha256), same
number of rows, and the whole model's validation macro-F1 on the rows that
have tokens equal to the card's. ``sentiscore train`` fits the cascade
itself for new models.
"""

from __future__ import annotations

import argparse
import sys

from sentiscore.artifacts import add_card_section, read_card
from sentiscore.cascade import DEFAULT_MAX_LABEL_CHANGE, DEFAULT_MIN_THRESHOLD
from sentiscore.errors import TrainingError
from sentiscore.pipeline import Scorer
from sentiscore.train import cascade_on, reproduced_validation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("train_file")
    parser.add_argument("--max-label-change", type=float, default=DEFAULT_MAX_LABEL_CHANGE)
    parser.add_argument("--min-threshold", type=float, default=DEFAULT_MIN_THRESHOLD,
                        help="Never below this confidence; raise it for a model whose deep path overturns more "
                             "n-gram calls on sources it was not trained on (BENCHMARKS.md, Speed 2026-12-01)")
    parser.add_argument("--text-column", default="txt")
    parser.add_argument("--label-column", default="label")
    args = parser.parse_args()

    card = read_card(args.model)
    with Scorer.from_card(card, cascade=False, top_k=0) as scorer:
        try:
            texts, y, _probs, _labelled = reproduced_validation(scorer, card, args.train_file, args.text_column, args.label_column)
        except TrainingError as exc:
            print(exc, file=sys.stderr)
            return 1
        cascade = cascade_on(scorer, texts, y, args.max_label_change, args.min_threshold)
    if cascade is None:
        print(f"{card.name}: no cascade (not wide-deep, or no threshold within the budget)", file=sys.stderr)
        return 1
    add_card_section(card.path, "cascade", cascade.to_dict())
    print(f"{card.name}: validation macro-F1 {card.metrics['validation']['macro_f1']:.4f} reproduced; cascade {cascade.to_dict()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
