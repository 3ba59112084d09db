"""What the scoring cascade changes: labels, quality and the share of rows
that skip the deep path, on the dev split and leave one source out.

    python bench/cascade.py --model zh-fast --model zh-elmo --dev build/splits-all/dev.parquet \
        [--loso build/loso-10k --recipe wd-vectors] [--out build/cascade-bench] [--json F]

For each model, every dev row is scored twice by the same scorer, with the
card's cascade and without (``score --no-cascade``), and the table gives:
rows the n-gram path decided, labels that differ, largest probability
difference on the rows the deep path scored (they must be identical), and
macro-F1 both ways.

``--loso DIR``: the leave-one-source-out folds and models of bench/loso.py
(DIR/folds/GROUP/{train,test}.parquet, DIR/models/RECIPE/GROUP). Their
models were trained before cascades existed, so each gets one fitted here
on its own validation split (scripts/fit_cascade.py's procedure, on a copy
under OUT; ``--max-label-change`` sets its budget), never on the group left out; then its test group is scored both
ways. Binary groups are scored as bench/loso.py scores them (a 中评 on a
binary row is an error).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import LABELS, fold_metrics, read  # noqa: E402

from sentiscore.cascade import DEFAULT_MAX_LABEL_CHANGE  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scored_both_ways(model, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(probs without the cascade, probs with it, deep-path mask with it), in
    bench/loso.py's label order; rows with no label are all-zero."""
    from sentiscore.artifacts import read_card
    from sentiscore.pipeline import Scorer

    card = read_card(model)
    if card.cascade is None:
        raise SystemExit(f"{model}: its card has no cascade (scripts/fit_cascade.py adds one)")
    columns = [int(np.flatnonzero(LABELS == int(value))[0]) for value, _ in card.labels]
    with Scorer.from_card(card, top_k=0) as scorer:
        results = []
        for cascade in (None, card.cascade):
            scorer.cascade = cascade
            prepared = scorer.preprocess(texts)
            forwarded = scorer.forward(prepared, explain=False)
            probs = np.zeros((len(texts), LABELS.size))
            rows = prepared.row_to_unique >= 0
            unique = prepared.row_to_unique[rows]
            has_tokens = forwarded.segmented.lengths[unique] > 0
            where = np.flatnonzero(rows)[has_tokens]
            probs[np.ix_(where, columns)] = forwarded.probs[unique[has_tokens]]
            deep = np.zeros(len(texts), bool)
            deep[where] = forwarded.deep[unique[has_tokens]]
            results.append((probs, deep))
    (full, _), (cascaded, deep) = results
    return full, cascaded, deep, cascaded.sum(axis=1) > 0


def compare(name: str, test: str, model, frame: pd.DataFrame) -> dict:
    started = time.perf_counter()
    full, cascaded, deep, labelled = scored_both_ways(model, frame["txt"].astype(str).tolist())
    y = frame["label"].astype(int).to_numpy()
    before, after = fold_metrics(y, full), fold_metrics(y, cascaded)
    changed = (full.argmax(axis=1) != cascaded.argmax(axis=1)) & labelled
    log(f"  {name} on {test}: {time.perf_counter() - started:.0f} s")
    return {
        "model": name, "test": test, "rows": int(y.size),
        "skipped": round(float(np.mean(~deep[labelled])), 4),
        "labels_changed": int(changed.sum()), "labels_changed_share": round(float(changed.sum() / max(labelled.sum(), 1)), 5),
        "deep_rows_max_prob_diff": float(np.abs(full[deep] - cascaded[deep]).max(initial=0.0)),
        "macro_f1_full": before["macro_f1"], "macro_f1_cascade": after["macro_f1"],
        "delta_points": round(100 * (after["macro_f1"] - before["macro_f1"]), 2),
        "accuracy_full": before["accuracy"], "accuracy_cascade": after["accuracy"],
    }


def loso_models(loso: Path, recipe: str, out: Path, max_label_change: float) -> list[tuple[str, Path, Path]]:
    """(group, model copy with a cascade, test file) for every fold model."""
    from sentiscore.artifacts import add_card_section, read_card
    from sentiscore.pipeline import Scorer
    from sentiscore.train import cascade_on, validation_rows_of

    found = []
    for model_dir in sorted((loso / "models" / recipe).iterdir()):
        fold = loso / "folds" / model_dir.name
        if not (model_dir / "meta.json").is_file() or model_dir.name == "dev":
            continue
        copy = out / "models" / f"{recipe}-{max_label_change:g}" / model_dir.name
        if not (copy / "meta.json").is_file() or read_card(copy).cascade is None:
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(model_dir, copy)
            card = read_card(copy)
            texts, y = validation_rows_of(card, fold / "train.parquet")
            with Scorer.from_card(card, cascade=False, top_k=0) as scorer:
                cascade = cascade_on(scorer, texts, y, max_label_change)
            if cascade is None:
                log(f"  {model_dir.name}: no cascade within the budget")
                continue
            add_card_section(copy, "cascade", cascade.to_dict())
            log(f"  {model_dir.name}: threshold {cascade.threshold:.3f}, {cascade.skip_share:.1%} of validation rows skipped")
        found.append((model_dir.name, copy, fold / "test.parquet"))
    return found


def render(rows: list[dict]) -> str:
    head = ("| model | test | rows | skipped | labels changed | max prob diff, deep rows | macro-F1 full | macro-F1 cascade | Δ points |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['model']} | {r['test']} | {r['rows']:,} | {r['skipped']:.1%} | {r['labels_changed']} "
                     f"({r['labels_changed_share']:.3%}) | {r['deep_rows_max_prob_diff']:.1e} | {r['macro_f1_full']:.4f} | "
                     f"{r['macro_f1_cascade']:.4f} | {r['delta_points']:+.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="Model with a cascade in its card (repeatable).")
    parser.add_argument("--dev", type=Path, default=None, help="Labelled Parquet (txt, label) scored by every --model.")
    parser.add_argument("--loso", type=Path, default=None, help="bench/loso.py's output directory.")
    parser.add_argument("--recipe", default="wd-vectors", help="The --loso recipe whose fold models are measured.")
    parser.add_argument("--max-label-change", type=float, default=DEFAULT_MAX_LABEL_CHANGE,
                        help="The budget the --loso models' cascades are fitted to (default: train's).")
    parser.add_argument("--out", type=Path, default=Path("build/cascade-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    rows = []
    if args.dev is not None:
        dev = read(args.dev)
        for model in args.model:
            rows.append(compare(Path(model).name, args.dev.stem, model, dev))
    if args.loso is not None:
        for group, model, test in loso_models(args.loso, args.recipe, args.out, args.max_label_change):
            rows.append(compare(f"{args.recipe} (LOSO, budget {args.max_label_change:g})", group, model, read(test)))
    print(render(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
