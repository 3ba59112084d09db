"""``score --adapt-domain`` (self-training on the scored file, sentiscore/adapt.py)
measured on a ``bench/loso.py`` cache: every fold's test rows are one file,
scored by the fold's model (its cached probabilities), then adapted with the
same functions ``score`` uses (FileSample → fit_file_model → FileModel.blend).

    python bench/adapt_domain.py build/loso-10k --system ens-idf-ind --system wd-idf \
        --rows 0 --rows 4000 --rows 1000 --rows 300 --out bench/results/DATE/adapt-domain.md

Tables: macro-F1 per fold as is and adapted (and the char / word TF-IDF peers
on the same rows), the LOSO mean, and the predicted 中评 share; ``--rows N``
draws N rows of each fold's file (seeded; 0: the whole file), so the effect of
a file's size shows. ``dev by source``: the dev fold's rows of one source group
as one file, scored by the dev fold's model, which was trained on every group:
files like the training data, where self-training has the least to add;
``dev:all``: the whole dev split as one file (every source mixed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loso import GROUPS, PEERS, fold_metrics, load_fold  # noqa: E402

from sentiscore.adapt import FileSample, fit_file_model  # noqa: E402


def adapted_probs(texts: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, str]:
    sample = FileSample()
    sample.add(texts, probs)
    file_model = fit_file_model(sample.texts, sample.probs, sample.rows_seen)
    if file_model is None:
        return probs, "not fitted"
    return file_model.blend(probs, texts), ""


def files(cache: Path, system: str, rows: int, seed: int):
    """(name, texts, labels, {system or peer: probs}) for every file to adapt."""
    def load(fold: str):
        return load_fold(cache, fold, (system, *PEERS), np.float32)

    def drawn(name, test, probs, keep=None):
        index = np.arange(len(test)) if keep is None else np.flatnonzero(keep)
        if rows and index.size > rows:
            index = np.sort(np.random.default_rng(seed).choice(index, rows, replace=False))
        return name, test["txt"].to_numpy(object)[index], test["label"].to_numpy()[index], {k: v[index] for k, v in probs.items()}

    for group in GROUPS:
        yield drawn(group, *load(group))
    test, probs = load("dev")
    yield drawn("dev:all", test, probs)
    source = test["source"].str.split(":").str[0].to_numpy()
    for group in GROUPS:
        yield drawn(f"dev:{group}", test, probs, source == group)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", type=Path, help="a bench/loso.py --out directory")
    parser.add_argument("--system", action="append", required=True, help="a recipe or ensemble of that run")
    parser.add_argument("--rows", action="append", type=int, default=None, help="rows drawn per file (0: all); repeatable")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here (Markdown)")
    args = parser.parse_args(argv)
    lines = [f"`score --adapt-domain` on {args.cache}: macro-F1 as is → adapted (中评 % predicted as is → adapted; true)", ""]
    for system in args.system:
        for rows in args.rows or [0]:
            lines += [f"### {system}, {'whole files' if not rows else f'{rows:,} rows drawn per file'}", "",
                      f"| file | rows | {' | '.join(PEERS)} | {system} | adapted | Δ | 中评 % |", "|---|---:|" + "---:|" * (len(PEERS) + 3) + "---|"]
            deltas: dict[str, list] = {"loso": [], "dev": [], "pooled": []}
            means: dict[str, dict[str, list]] = {"loso": {}, "dev": {}, "pooled": {}}
            for name, texts, y, probs in files(args.cache, system, rows, args.seed):
                adapted, note = adapted_probs(texts, probs[system])
                before, after = fold_metrics(y, probs[system]), fold_metrics(y, adapted)
                peers = [fold_metrics(y, probs[p])["macro_f1"] for p in PEERS]
                kind = "loso" if not name.startswith("dev:") else "dev" if name != "dev:all" else "pooled"
                deltas[kind].append(after["macro_f1"] - before["macro_f1"])
                for key, value in zip((*PEERS, system, "adapted"), (*peers, before["macro_f1"], after["macro_f1"])):
                    means[kind].setdefault(key, []).append(value)
                share = f"{100 * before['predicted_share'][0]:.0f} → {100 * after['predicted_share'][0]:.0f}; {100 * before['true_share'][0]:.0f}"
                lines.append(f"| {name} | {len(y):,} | {' | '.join(f'{p:.4f}' for p in peers)} | {before['macro_f1']:.4f} | "
                             f"{after['macro_f1']:.4f} | {100 * deltas[kind][-1]:+.1f} | {share}{' ' + note if note else ''} |")
                print(lines[-1], flush=True)
            for kind, label in (("loso", "**LOSO mean**"), ("dev", "**dev by source, mean**")):
                m = {k: float(np.mean(v)) for k, v in means[kind].items()}
                lines.append(f"| {label} | | {' | '.join(f'{m[p]:.4f}' for p in PEERS)} | {m[system]:.4f} | {m['adapted']:.4f} | "
                             f"{100 * (m['adapted'] - m[system]):+.1f} (worst {100 * min(deltas[kind]):+.1f}) | |")
                print(lines[-1], flush=True)
            lines.append("")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
