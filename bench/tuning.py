"""One-factor-at-a-time tuning of zh-fast's recipe: each variant changes one
setting of ``sentiscore train`` and is measured the same three ways as the
built-in models — the dev split, and leave-one-source-out on weibo and on
douban (trained without that source, tested on all of it). Prints a
markdown table of accuracy and macro-F1 with each variant's change against
the baseline row, and writes OUT/tuning.json.

    python bench/tuning.py --splits build/splits --out build/tuning

Every run is kept in OUT/VARIANT/{dev,minus-weibo,minus-douban} with its
metrics JSON, so a rerun only does what is missing (``--variant NAME`` to
run a subset). On 2 cores one run takes 3-6 minutes; the full table is a
couple of hours. The tests are never used to pick a training epoch: early
stopping and calibration use the training file's own validation split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# Common to every run: patience 1 keeps the sweep affordable (the best
# epoch of zh-fast's recipe was epoch 1 in every run we made); class biases
# as zh-fast was trained (the sweep began before they were made optional).
COMMON = ["--epochs", "4", "--patience", "1", "--class-bias"]

VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "token-dropout-0.25": ["--token-dropout", "0.25"],
    "embed-dim-48": ["--embed-dim", "48"],
    "dropout-0.5": ["--dropout", "0.5"],
    "no-class-weights": ["--no-class-weights"],
    "lr-cosine": ["--lr-schedule", "cosine"],
    "maxlen-64": ["--maxlen", "64"],
    "stopwords-none": ["--stopwords", "none"],
}

TESTS = {  # run name: (training split, test split)
    "dev": ("train", "dev"),
    "minus-weibo": ("train-minus-weibo", "weibo"),
    "minus-douban": ("train-minus-douban", "douban"),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def result_path(out: Path, variant: str, test: str) -> Path:
    return out / variant / f"{test}.json"


def run_one(sentiscore: str, splits: Path, out: Path, variant: str, test: str) -> dict:
    run_dir = out / variant / test
    result_file = result_path(out, variant, test)
    if result_file.exists():
        return json.loads(result_file.read_text())
    train_split, test_split = TESTS[test]
    model_dir = run_dir / "model"
    train_seconds = None  # the model was trained by an earlier, interrupted run
    if not (model_dir / "meta.json").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sentiscore, "train", str(splits / f"{train_split}.parquet"), "--out", str(model_dir), "--name", f"{variant}-{test}",
               *COMMON, *VARIANTS[variant], "-q"]
        log(f"[{variant} {test}] {' '.join(cmd[1:])}")
        started = time.perf_counter()
        subprocess.run(cmd, check=True)
        train_seconds = round(time.perf_counter() - started)
    metrics_file = run_dir / "metrics.json"
    subprocess.run([sentiscore, "evaluate", str(splits / f"{test_split}.parquet"), "--model", str(model_dir), "--json", str(metrics_file)],
                   check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads(metrics_file.read_text())
    meta = json.loads((model_dir / "meta.json").read_text())
    result = {"variant": variant, "test": test, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
              "best_epoch": meta["training"]["best_epoch"], "train_seconds": train_seconds}
    result_file.write_text(json.dumps(result, indent=1))
    return result


def table(results: list[dict]) -> str:
    by = {(r["variant"], r["test"]): r for r in results}
    base = {t: by.get(("baseline", t)) for t in TESTS}
    head = "| variant | " + " | ".join(f"{t} acc | {t} macro-F1" for t in TESTS) + " | mean macro-F1 Δ |"
    lines = [head, "|" + "---|" * (2 * len(TESTS) + 2)]
    for variant in VARIANTS:
        cells, deltas = [], []
        for t in TESTS:
            r = by.get((variant, t))
            if r is None:
                cells += ["", ""]
                continue
            delta = ""
            if base[t] is not None and variant != "baseline":
                d = 100 * (r["macro_f1"] - base[t]["macro_f1"])
                deltas.append(d)
                delta = f" ({d:+.1f})"
            cells += [f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}{delta}"]
        if not any(cells):
            continue
        mean = f"{sum(deltas) / len(deltas):+.1f}" if len(deltas) == len(TESTS) else ""
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path, default=Path("build/splits"))
    parser.add_argument("--out", type=Path, default=Path("build/tuning"))
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), help="Run only these (repeatable).")
    parser.add_argument("--sentiscore", default="sentiscore", help="The sentiscore command to run.")
    parser.add_argument("--table-only", action="store_true", help="Print the table of the runs done so far.")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for variant in args.variant or list(VARIANTS):
        for test in TESTS:
            if args.table_only:
                f = result_path(args.out, variant, test)
                if f.exists():
                    results.append(json.loads(f.read_text()))
                continue
            results.append(run_one(args.sentiscore, args.splits, args.out, variant, test))
            (args.out / "tuning.json").write_text(json.dumps(results, indent=1))
    print(f"Common settings: zh-fast's recipe with {' '.join(COMMON)}; one change per row. "
          "Δ: macro-F1 points against the baseline row.\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
