"""Run one outside peer over a Parquet file of texts, in whatever Python
environment the peer is installed in (the bench's own virtualenv for the
pretrained peers, so they never touch sentiscore's dependencies).

    PYTHON bench/peer_runner.py PEER IN.parquet OUT.parquet [--model FILE] [--text-column txt]

Writes OUT.parquet with one row per input row, in order: ``pred`` (-1, 0, 1,
null where the peer raised on that text) and ``score`` (the peer's raw
number), and OUT.parquet.json with the peer's versions and the seconds spent
loading it and predicting. Needs only pyarrow besides the peer itself.

Peers and how their output becomes a label:

* ``snownlp``: ``SnowNLP(text).sentiments`` (probability of positive, naive
  Bayes over its own segmentation, trained on its bundled shopping-review
  corpus); >= 0.5 -> 1, else -1. It has no neutral class and never predicts 0.
* ``pysenti``: ``pysenti.classify(text)["score"]`` (the package's default,
  rule- and dictionary-based: sentiment words weighted by degree adverbs,
  negations and conjunctions, summed over clauses); > 0 -> 1, < 0 -> -1,
  exactly 0 -> 0 (neutral; in practice only texts with no dictionary word).
* ``tfidf-char-lr``: a pickled scikit-learn pipeline (``--model``) fitted on
  our training split by bench/quality.py or bench/speed.py; ``predict``.

This module imports nothing heavy at import time: the bench scripts import
it for ``PEERS`` and ``predict_with_peer``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRETRAINED = ("snownlp", "pysenti")  # fixed models shipped with the package
TRAINED = ("tfidf-char-lr",)  # fitted on our training split, pickled
PEERS = PRETRAINED + TRAINED
CHUNK = 10_000  # texts predicted between progress lines


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def load_peer(name: str, model: str | None):
    """(predict(texts) -> (preds, scores), versions) for one peer."""
    if name == "snownlp":
        from snownlp import SnowNLP

        def one(text):
            s = SnowNLP(text).sentiments
            return (1 if s >= 0.5 else -1), float(s)

        one("预热")  # first call loads lazily built state: keep it out of the timed predict
        return _per_text(one), {"snownlp": _version("snownlp")}
    if name == "pysenti":
        import pysenti

        def one(text):
            s = float(pysenti.classify(text)["score"])
            return (1 if s > 0 else -1 if s < 0 else 0), s

        one("预热")  # loads its dictionaries and jieba's: keep that out of the timed predict
        return _per_text(one), {"pysenti": _version("pysenti"), "jieba": _version("jieba")}
    if name == "tfidf-char-lr":
        import pickle

        if not model:
            raise SystemExit("tfidf-char-lr needs --model FILE (a pickled scikit-learn pipeline)")
        with open(model, "rb") as f:
            pipeline = pickle.load(f)

        def predict(texts):
            preds = pipeline.predict(texts)
            return [int(p) for p in preds], [None] * len(texts)

        return predict, {"scikit-learn": _version("scikit-learn")}
    raise SystemExit(f"unknown peer {name!r} (known: {', '.join(PEERS)})")


def _per_text(one):
    def predict(texts):
        preds, scores = [], []
        for text in texts:
            try:
                p, s = one(text)
            except Exception:  # e.g. SnowNLP raises ZeroDivisionError on ""
                p, s = None, None
            preds.append(p)
            scores.append(s)
        return preds, scores

    return predict


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("inp", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default=None, help="Pickled model file (trained peers).")
    parser.add_argument("--text-column", default="txt")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    predict, versions = load_peer(args.peer, args.model)
    loaded = time.perf_counter()
    texts = pq.read_table(args.inp, columns=[args.text_column]).column(args.text_column).to_pylist()
    texts = ["" if t is None else str(t) for t in texts]
    read = time.perf_counter()
    preds, scores = [], []
    for start in range(0, len(texts), CHUNK):
        p, s = predict(texts[start:start + CHUNK])
        preds += p
        scores += s
        if not args.quiet:
            print(f"{args.peer}: {start + len(p):,}/{len(texts):,} rows", file=sys.stderr, flush=True)
    predicted = time.perf_counter()
    table = pa.table({"pred": pa.array(preds, pa.int8()), "score": pa.array(scores, pa.float64())})
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, args.out)
    done = time.perf_counter()
    info = {
        "peer": args.peer,
        "rows": len(texts),
        "errors": sum(p is None for p in preds),
        "load_seconds": round(loaded - started, 3),
        "read_seconds": round(read - loaded, 3),
        "predict_seconds": round(predicted - read, 3),
        "write_seconds": round(done - predicted, 3),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "versions": versions,
    }
    Path(f"{args.out}.json").write_text(json.dumps(info, indent=2) + "\n")


def runner_command(python: str, peer: str, inp: Path, out: Path, model: Path | None = None, quiet: bool = True) -> list[str]:
    cmd = [str(python), str(Path(__file__).resolve()), peer, str(inp), str(out)]
    if model is not None:
        cmd += ["--model", str(model)]
    return cmd + (["--quiet"] if quiet else [])


def predict_with_peer(python: str, peer: str, texts: list[str], model: Path | None = None, workdir: Path | None = None) -> tuple[list, dict]:
    """Predictions of ``peer`` for ``texts`` (run by ``python`` in a
    subprocess) and the runner's info dict."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        inp, out = Path(tmp) / "texts.parquet", Path(tmp) / "preds.parquet"
        pq.write_table(pa.table({"txt": pa.array(texts, pa.string())}), inp)
        subprocess.run(runner_command(python, peer, inp, out, model, quiet=False), check=True)
        preds = pq.read_table(out).column("pred").to_pylist()
        info = json.loads(Path(f"{out}.json").read_text())
    if len(preds) != len(texts):
        raise RuntimeError(f"{peer}: {len(preds)} predictions for {len(texts)} texts")
    return preds, info


if __name__ == "__main__":
    main()
