"""The whole benchmark harness in one command: quality against the peers
(dev, per source, leave-one-source-out), calibration, and speed and memory
of ``sentiscore score`` against the peers' prediction throughput. Prints
markdown, writes OUT/report.md, OUT/results.json and OUT/speed.png.

    python scripts/split_data.py ../shared/data/sentiment_train.tsv --out build/splits
    python -m venv build/bench-venv && build/bench-venv/bin/pip install snownlp pysenti pyarrow
    python bench/run_all.py --splits build/splits --out build/bench

Options pass through to bench/quality.py, bench/calibration.py and
bench/speed.py, which can also be run alone. sentiscore models: every
built-in model by default (``--model NAME`` or ``--model NAME=DIR`` to
choose). Their leave-one-source-out numbers need models trained without
that source: ``--loso-model weibo:NAME=DIR``, or ``--train-loso`` to train
any missing one into OUT/loso/NAME-minus-GROUP with the settings recorded
in the model's card (about 10-15 minutes each for a zh-fast member on 2 cores,
~20 for zh-elmo; reused when it exists; an ensemble gets a twin of each
member, combined by ``sentiscore ensemble``; word vectors are looked up in
build/vectors/NAME, where the build scripts write them). ``--loso-elmo-model DIR`` gives
zh-elmo's twins a biLM pretrained without weibo and douban, so that no part
of the twin has seen the left-out source (``sentiscore elmo pretrain
build/splits/train-minus-weibo-douban.parquet --out DIR ...``).

``--limit N`` runs everything on at most N rows of each split (written to
OUT/splits-limit-N) and smaller speed files: a quick check that the harness
works, not numbers to report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality  # noqa: E402
import speed  # noqa: E402
from peer_runner import PEERS  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def limited_splits(splits: Path, out: Path, limit: int, seed: int = 13) -> Path:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(splits.glob("*.parquet")):
        df = pd.read_parquet(f)
        df.sample(min(limit, len(df)), random_state=seed).to_parquet(out / f.name, index=False)
    return out


def parse_models(specs) -> dict[str, str]:
    """``NAME`` (a built-in model) or ``NAME=DIR``; default every built-in model."""
    if not specs:
        return {name: name for name in speed.builtin_model_names()}
    models = {}
    for spec in specs:
        name, sep, model_dir = spec.partition("=")
        models[name] = model_dir if sep else name
    return models


def train_flags(meta: dict, model_dir: Path) -> list[str]:
    """``sentiscore train`` options that reproduce a model's recorded settings."""
    model, emb, training, seg = meta["model"], meta["embedder"], meta.get("training", {}), meta["segmenter"]
    flags = ["--arch", model["arch"], "--lstm-units", model["lstm_units"], "--dropout", model["dropout"],
             "--token-dropout", model["token_dropout"], "--maxlen", emb["maxlen"]]
    if model["arch"] == "wide-deep":
        flags += ["--wide-training", model["wide_training"], "--wide-c", model["wide_c"], "--wide-l2", model["wide_l2"]]
        wide = meta.get("wide") or {}
        flags += ["--wide-weighting", wide.get("weighting", "count")] + (["--wide-buckets", wide["num_buckets"]] if "num_buckets" in wide else [])
    if emb["type"] in ("vocab", "elmo+vocab"):
        flags += ["--embed-dim", emb["embed_dim"], "--min-count", emb["min_count"]]
    if emb["type"] in ("elmo", "elmo+vocab"):
        flags += ["--embedder", emb["type"], "--elmo-model", model_dir, "--layer-mix", emb.get("layer_mix", "average")]
    if emb.get("vectors"):
        # The card names the word vectors, not where they are: built-in ones by that name, the build scripts'
        # own in build/vectors/NAME.
        vectors = Path("build/vectors") / emb["vectors"]["name"]
        if emb["vectors"]["name"] == "zh-corpus-vectors":
            vectors = emb["vectors"]["name"]
        elif not (vectors / "vectors.npy").is_file():
            raise SystemExit(f"{model_dir} starts from word vectors {emb['vectors']['name']}; build them into {vectors} first "
                             f"(sentiscore vectors train ../shared/data/corpus/corpus.parquet --out {vectors})")
        flags += ["--vectors", vectors] + ([] if emb["vectors"].get("trainable", True) else ["--freeze-vectors"])
        flags.append("--adapt-vectors" if emb["vectors"].get("adapted_to_training_texts") else "--no-adapt-vectors")
    elif emb["type"] != "elmo":
        flags += ["--vectors", "none"]
    for key, flag in (("binary_source_loss", "--binary-source-loss"), ("ema_momentum", "--ema-momentum")):
        if training.get(key) and training[key] != "full":
            flags += [flag, training[key]]
    # Cards before 2026-12-02 (the shipped models' included) do not record --patience: their twins use the default.
    for key, flag in (("epochs", "--epochs"), ("patience", "--patience"), ("batch_size", "--batch-size"), ("learning_rate", "--learning-rate"),
                      ("lr_schedule", "--lr-schedule"), ("seed", "--seed"), ("val_fraction", "--val-fraction")):
        if key in training:
            flags += [flag, training[key]]
    # Cards from 0.2 name the weighting; older ones only list the weights (sqrt when present).
    flags += ["--class-weights", training.get("class_weighting") or ("sqrt" if training.get("class_weights") else "none")]
    if training.get("label_smoothing"):
        flags += ["--label-smoothing", training["label_smoothing"]]
    flags += ["--markup", seg.get("markup", "keep")]
    if not training.get("calibration"):
        flags.append("--no-calibration")
    elif training["calibration"].get("class_bias"):
        flags.append("--class-bias")
    stopwords = seg.get("stopwords_source", "builtin")
    flags += ["--stopwords", stopwords if stopwords in ("builtin", "none") else str(model_dir / "stopwords.txt")]
    if seg.get("user_dict"):
        flags += ["--user-dict", str(model_dir / "userdict.txt")]
    return [str(f) for f in flags]


def train_missing_loso(models: dict[str, str], loso: dict, splits: Path, out: Path, elmo_model: Path | None = None) -> dict:
    """Train (or reuse) OUT/loso/NAME-minus-GROUP for every model and group
    that has no --loso-model. ELMo models train on ``elmo_model`` when given
    (a biLM pretrained without the left-out sources), else on their own biLM,
    which has seen those sources' texts (not their labels)."""
    from sentiscore.artifacts import read_meta, resolve_model_path

    loso = dict(loso)
    for name, model in models.items():
        model_dir = resolve_model_path(model)
        for group in quality.LOSO_GROUPS:
            if (group, name) in loso:
                continue
            target = out / "loso" / f"{name}-minus-{group}"
            if not (target / "meta.json").exists():
                meta = read_meta(model_dir)
                train_data = splits / f"train-minus-{group}.parquet"
                if meta.get("kind") == "ensemble":  # a twin of each member, then their ensemble
                    twins = [out / "loso" / f"{name}-minus-{group}-member{i + 1}" for i in range(len(meta["members"]))]
                    for rel, twin in zip(meta["members"], twins):
                        if not (twin / "meta.json").exists():
                            train_twin(model_dir / rel, train_data, twin, elmo_model)
                    subprocess.run([sys.executable, "-m", "sentiscore", "ensemble", *map(str, twins), "--out", str(target),
                                    "--name", f"{name}-minus-{group}"], check=True)
                else:
                    train_twin(model_dir, train_data, target, elmo_model)
            loso[(group, name)] = str(target)
    return loso


def train_twin(model_dir: Path, train_data: Path, target: Path, elmo_model: Path | None) -> None:
    """``sentiscore train`` on ``train_data`` with the settings in ``model_dir``'s card."""
    from sentiscore.artifacts import read_meta

    flags = train_flags(read_meta(model_dir), model_dir)
    if elmo_model is not None and "--elmo-model" in flags:
        flags[flags.index("--elmo-model") + 1] = str(elmo_model)
    cmd = [sys.executable, "-m", "sentiscore", "train", str(train_data), "--out", str(target), "--name", target.name, *flags]
    log(f"training: {' '.join(cmd)}")
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    log(f"trained {target} in {time.perf_counter() - started:.0f} s")


def carry_over_skipped_sections(results: dict, previous_path: Path, skipped: list[str]) -> None:
    """A skipped section is kept from OUT/results.json when that run measured
    the same models at the same --limit, so that a long harness can run in
    parts (speed alone on an idle machine, say) and still give one report.
    Each section keeps the machine line of the run that measured it."""
    results["section_runs"] = {}
    if not skipped or not previous_path.exists():
        return
    previous = json.loads(previous_path.read_text())
    if previous.get("models") != results["models"] or previous.get("limit") != results["limit"]:
        return
    for section in skipped:
        if section in previous:
            results[section] = previous[section]
            results["section_runs"][section] = previous.get("section_runs", {}).get(section, previous["machine"])
            if section == "speed" and previous.get("plot"):
                results["plot"] = previous["plot"]


def report(results: dict) -> str:
    lines = ["# sentiscore benchmarks", "", *speed.machine_lines(results["machine"], results.get("speed", {}).get("peer_versions"))]
    runs = results.get("section_runs", {})
    if len({json.dumps(run, sort_keys=True) for run in runs.values()}) > 1:
        lines += ["", "Sections measured in separate runs of this harness:"]
        for section, run in runs.items():
            lines.append(f"- {section}: started {run['date']}, sentiscore {run['versions']['sentiscore']}, "
                         f"load average at start {' '.join(map(str, run['load_average_at_start']))}")
    if "quality" in results:
        q = results["quality"]
        lines += ["", "## Quality and calibration", "", quality.render(q["peers"], q["sentiscore"])]
    if "speed" in results:
        lines += ["", "## Speed and memory", "", speed.render(results["speed"])]
        if results.get("plot"):
            lines += ["", f"![rows/s and peak RSS against rows]({Path(results['plot']).name})"]
    if results.get("limit"):
        lines += ["", f"**--limit {results['limit']}: a check of the harness on subsets, not numbers to report.**"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=Path, default=Path("build/splits"), help="Folder from scripts/split_data.py.")
    parser.add_argument("--out", type=Path, default=Path("build/bench"), help="Folder for inputs, outputs and the report.")
    parser.add_argument("--model", action="append", default=None, metavar="NAME[=DIR]",
                        help="sentiscore model (repeatable; default: every built-in model). Speed ratios are to the first.")
    parser.add_argument("--loso-model", action="append", default=[], metavar="GROUP:NAME=DIR",
                        help="A model NAME trained without GROUP (weibo, douban), measured on GROUP.")
    parser.add_argument("--train-loso", action="store_true", help="Train missing LOSO models with each model's recorded settings.")
    parser.add_argument("--loso-elmo-model", type=Path, default=None, metavar="DIR",
                        help="With --train-loso: the biLM for ELMo models' twins, pretrained without the left-out sources "
                             "(default: the model's own, which has seen their texts).")
    parser.add_argument("--peers", default=",".join(quality.PEERS), help="Quality peers (comma-separated).")
    parser.add_argument("--speed-peers", default=",".join(speed.DEFAULT_PEERS), help="Speed peers (comma-separated).")
    parser.add_argument("--peer-python", type=Path, default=quality.DEFAULT_PEER_PYTHON,
                        help=f"Python of the bench environment with snownlp and pysenti (default: {quality.DEFAULT_PEER_PYTHON}).")
    parser.add_argument("--rows", type=int, nargs="+", default=list(speed.DEFAULT_ROWS), help="Speed row counts (default: 10k 100k 1M).")
    parser.add_argument("--peer-max-rows", action="append", default=None, metavar="[NAME=]ROWS",
                        help=f"Largest speed file a peer runs (default: {' '.join(speed.DEFAULT_PEER_CAPS)}).")
    parser.add_argument("--workers", type=int, default=None, help="sentiscore score --workers (default: its own).")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="Quick check on at most N rows per split.")
    parser.add_argument("--render-only", action="store_true", help="Rewrite OUT/report.md and OUT/speed.png from OUT/results.json.")
    parser.add_argument("--reference", default=None, metavar="NAME",
                        help="With --render-only: the system the speed ratios are to (default: as measured, the first model).")
    args = parser.parse_args(argv)

    if args.render_only:
        results = json.loads((args.out / "results.json").read_text())
        if args.reference and "speed" in results:
            speed.add_ratios(results["speed"], args.reference)
            (args.out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        if "speed" in results:
            speed.plot(results["speed"], Path(results["plot"]),
                       title=f"sentiscore vs peers, {results['machine']['date'][:10]}, {results['machine']['cpus']} CPUs")
        (args.out / "report.md").write_text(report(results))
        print(report(results))
        return

    for group in (args.peers, args.speed_peers):
        unknown = [p for p in group.split(",") if p and p not in quality.PEERS]
        if unknown:
            raise SystemExit(f"unknown peers {', '.join(unknown)} (known: {', '.join(quality.PEERS)})")
    speed_peers = [p for p in args.speed_peers.split(",") if p]
    not_runnable = [p for p in speed_peers if p not in PEERS]
    if not_runnable:
        raise SystemExit(f"--speed-peers: {', '.join(not_runnable)} cannot be run by bench/peer_runner.py (can: {', '.join(PEERS)})")
    quality_peers = [p for p in args.peers.split(",") if p]
    quality.check_peer_python(args.peer_python, quality_peers + speed_peers)
    if not (args.splits / "train.parquet").exists():
        raise SystemExit(f"no {args.splits / 'train.parquet'}: run python scripts/split_data.py ../shared/data/sentiment_train.tsv --out {args.splits}")

    args.out.mkdir(parents=True, exist_ok=True)
    splits, rows = args.splits, args.rows
    if args.limit:
        splits = limited_splits(args.splits, args.out / f"splits-limit-{args.limit}", args.limit)
        rows = [r for r in rows if r <= args.limit] or [args.limit]
    models = parse_models(args.model)
    results: dict = {"machine": speed.machine_info(), "limit": args.limit, "models": models}
    carry_over_skipped_sections(results, args.out / "results.json", skipped=[name for name, skip in
                                (("quality", args.skip_quality), ("speed", args.skip_speed)) if skip])
    started = time.perf_counter()
    peer_models = args.out / "peer-models" / splits.name  # never a model fitted on other splits
    if not args.skip_quality:
        loso = quality.parse_loso(args.loso_model)
        if args.train_loso:
            loso = train_missing_loso(models, loso, splits, args.out, args.loso_elmo_model)
        results["quality"] = quality.run_quality(splits, models, loso, quality_peers, args.peer_python, model_dir=peer_models)
        (args.out / "quality.json").write_text(json.dumps(results["quality"], indent=2, ensure_ascii=False) + "\n")
        results["section_runs"]["quality"] = results["machine"]
    if not args.skip_speed:
        results["speed"] = speed.run_speed(models, rows, speed_peers, speed.parse_caps(args.peer_max_rows or speed.DEFAULT_PEER_CAPS),
                                           splits / "train.parquet", args.out, args.peer_python, peer_models,
                                           splits / "train.parquet", args.workers)
        results["section_runs"]["speed"] = results["machine"]
        results["plot"] = str(speed.plot(results["speed"], args.out / "speed.png",
                                         title=f"sentiscore vs peers, {results['machine']['date'][:10]}, {results['machine']['cpus']} CPUs"))
    results["seconds"] = round(time.perf_counter() - started, 1)
    text = report(results)
    (args.out / "report.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(text)
    log(f"wrote {args.out / 'report.md'}, {args.out / 'results.json'}" + (f", {results['plot']}" if results.get("plot") else "")
        + f" ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
