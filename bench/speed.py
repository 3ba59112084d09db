"""Speed and memory benchmark: ``sentiscore score`` end to end for each
model, against the peers' prediction throughput measured the same way in the
same run.

    python bench/speed.py [--model zh-fast ...] [--rows 10000 100000 1000000] \
        [--peers snownlp,pysenti,tfidf-char-lr] [--peer-max-rows 100000 --peer-max-rows snownlp=10000] \
        [--source build/splits/train.parquet] [--out-dir build/bench] [--json F] [--plot F.png]

For each row count, resamples the source texts with replacement (fixed
seed) into OUT_DIR/input-N.parquet (columns id, txt, source). Then, one
after the other on that same file:

* each sentiscore model (default: every built-in model):
  ``python -m sentiscore score IN OUT --model M --quiet --overwrite``;
* each peer, up to its row cap: ``bench/peer_runner.py PEER IN OUT`` run by
  the peer's Python (SnowNLP and pysenti: the bench environment,
  ``--peer-python``; char TF-IDF + LR: this Python, with the pipeline
  bench/quality.py pickled, or fitted here on --train if there is none).
  It reads the Parquet, predicts every row and writes a Parquet of labels.

Every system is timed the same way: wall seconds of the whole command
(interpreter start, imports, model load, reading and writing included), and
peak RSS polled every 0.1 s, summed over the process and its children
(sentiscore's segmentation workers); short spikes between polls can be
missed. Peers also report their predict-only seconds. Ratios are each
system's rows/s divided by the first model's at the same row count, both
measured minutes apart on the same machine: this machine is noisy, ratios
less so. sentiscore scores each distinct text once per chunk; the peers
predict every row (resampled training texts: ~6% repeats per 10k rows).

Needs psutil (``pip install psutil``) and matplotlib for --plot. Prints
markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

try:
    import psutil
except ImportError:  # pragma: no cover
    raise SystemExit("bench/speed.py needs psutil: pip install psutil")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_runner import PEERS, PRETRAINED, runner_command  # noqa: E402

POLL_SECONDS = 0.1
MB = 1024 * 1024  # RSS is reported in MiB (the JSON keys say _mb)
DEFAULT_ROWS = (10_000, 100_000, 1_000_000)
DEFAULT_PEERS = ("snownlp", "pysenti", "tfidf-char-lr")
# SnowNLP predicts ~150-300 texts/s here (a Python loop per text): 100k rows would take 6-10 minutes
# and its rows/s does not change with the file size, so it stops at 10k by default.
DEFAULT_PEER_CAPS = ("100000", "snownlp=10000")
DEFAULT_PEER_PYTHON = Path("build/bench-venv/bin/python")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_input(source: Path, rows: int, out: Path, seed: int) -> Path:
    """``rows`` rows drawn with replacement from ``source``'s texts."""
    table = pq.read_table(source, columns=["txt", "source"])
    picks = np.random.default_rng(seed).integers(0, table.num_rows, size=rows)
    sample = table.take(pa.array(picks))
    sample = sample.add_column(0, "id", pa.array(np.arange(rows, dtype=np.int64)))
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(sample, out)
    return out


def run_measured(cmd: list[str], **popen) -> dict:
    """Run ``cmd`` (``popen``: ``cwd``, ``env``, as subprocess.Popen takes them); wall seconds and peak RSS (main process, process tree)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, **popen)
    main = psutil.Process(proc.pid)
    peak_main = peak_tree = 0
    while proc.poll() is None:
        try:
            rss_main = main.memory_info().rss
            rss_tree = rss_main
            for child in main.children(recursive=True):
                try:
                    rss_tree += child.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            break
        peak_main = max(peak_main, rss_main)
        peak_tree = max(peak_tree, rss_tree)
        time.sleep(POLL_SECONDS)
    returncode = proc.wait()
    seconds = time.perf_counter() - started
    if returncode != 0:
        raise SystemExit(f"command failed with exit status {returncode}: {' '.join(cmd)}")
    return {"seconds": round(seconds, 3), "peak_rss_main_mb": round(peak_main / MB, 1), "peak_rss_tree_mb": round(peak_tree / MB, 1)}


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "?"


def _sentiscore_commit() -> str:
    """The git commit of the sentiscore package being measured (+dirty)."""
    try:
        import sentiscore

        root = Path(sentiscore.__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "sentiscore"], capture_output=True, text=True).stdout.strip()
        return commit + (" with uncommitted changes" if dirty else "")
    except Exception:
        return "?"


def machine_info() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "?"
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": nproc,
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            "sentiscore": f"{_version('sentiscore')} (git {_sentiscore_commit()})",
            "tensorflow": _version("tensorflow", "tensorflow-cpu"),
            "keras": _version("keras"),
            "jieba_fast": _version("jieba_fast", "jieba-fast"),
            "scikit-learn": _version("scikit-learn"),
            "numpy": _version("numpy"),
            "pyarrow": _version("pyarrow"),
            "torch": _version("torch"),
        },
    }


def machine_lines(info: dict | None = None, peer_versions: dict | None = None) -> list[str]:
    info = info or machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v != "?")
    lines = [
        f"- date: {info['date']}",
        f"- machine: {info['cpus']} CPUs (nproc), {info['cpu']}, {info['memory_gib']} GiB; {info['os']}; "
        f"Python {info['python']}; load average at start {' '.join(map(str, info['load_average_at_start']))}",
        f"- versions: {versions}",
    ]
    if peer_versions:
        lines.append("- peers: " + ", ".join(f"{k} {v}" for k, v in sorted(peer_versions.items())))
    return lines


def parse_caps(specs) -> tuple[int | None, dict[str, int]]:
    """``--peer-max-rows`` values: ROWS (every peer) or NAME=ROWS."""
    default, caps = None, {}
    for spec in specs:
        name, sep, rows = spec.rpartition("=")
        try:
            value = int(rows.replace(",", "").replace("_", ""))
        except ValueError:
            raise SystemExit(f"--peer-max-rows {spec!r}: expected ROWS or NAME=ROWS")
        if sep:
            caps[name] = value
        else:
            default = value
    return default, caps


def peer_model(name: str, model_dir: Path, train: Path) -> Path | None:
    """The pickled pipeline of a trained peer: bench/quality.py's, or fitted
    here on ``train`` (fit time not measured)."""
    if name in PRETRAINED:
        return None
    path = model_dir / f"{name}.pkl"
    if not path.exists():
        from quality import make_peer, read_split

        log(f"fitting {name} on {train} for the speed run (not timed)")
        df = read_split(train.parent, train.stem)
        model = make_peer(name).fit(df["txt"], df["label"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(model))
    return path


def run_speed(models: dict[str, str], rows_list, peers, caps: tuple[int | None, dict[str, int]], source: Path, out_dir: Path,
              peer_python: Path = DEFAULT_PEER_PYTHON, model_dir: Path | None = None, train: Path | None = None,
              workers: int | None = None, seed: int = 13) -> dict:
    default_cap, per_peer = caps
    model_dir = model_dir or out_dir / "peer-models"
    train = train or source
    if any(p in PRETRAINED for p in peers) and not Path(peer_python).exists():
        raise SystemExit(f"no Python at {peer_python} for the pretrained peers; create the bench environment "
                         "(python -m venv build/bench-venv && build/bench-venv/bin/pip install snownlp pysenti pyarrow), "
                         "pass --peer-python, or leave them out of --peers")
    pickles = {p: peer_model(p, model_dir, train) for p in peers}
    runs, peer_versions = [], {}
    for rows in rows_list:
        inp = make_input(source, rows, out_dir / f"input-{rows}.parquet", seed)
        distinct = len(set(pq.read_table(inp, columns=["txt"]).column("txt").to_pylist()))
        for name, spec in models.items():
            out = out_dir / f"output-{name.replace('/', '_')}-{rows}.parquet"
            model, *extra = shlex.split(spec)
            cmd = [sys.executable, "-m", "sentiscore", "score", str(inp), str(out), "--model", model, *extra, "--quiet", "--overwrite"]
            if workers is not None:
                cmd += ["--workers", str(workers)]
            log(f"running: {' '.join(cmd)}")
            m = run_measured(cmd)
            check_rows(out, rows)
            runs.append({"system": name, "model": model, "score_args": extra, "kind": "sentiscore", "rows": rows, "distinct_texts": distinct, **m,
                         "rows_per_s": round(rows / m["seconds"], 1)})
            log(f"  {rows:,} rows: {m['seconds']:.1f} s, {rows / m['seconds']:,.0f} rows/s, peak RSS {m['peak_rss_tree_mb']:,.0f} MiB")
        for peer in peers:
            cap = per_peer.get(peer, default_cap)
            if cap is not None and rows > cap:
                continue
            out = out_dir / f"output-{peer}-{rows}.parquet"
            python = peer_python if peer in PRETRAINED else sys.executable
            cmd = runner_command(python, peer, inp, out, pickles[peer])
            log(f"running: {' '.join(cmd)}")
            m = run_measured(cmd)
            check_rows(out, rows)
            info = json.loads(Path(f"{out}.json").read_text())
            peer_versions.update(info["versions"])
            runs.append({"system": peer, "kind": "peer", "rows": rows, "distinct_texts": distinct, **m,
                         "rows_per_s": round(rows / m["seconds"], 1),
                         "predict_seconds": info["predict_seconds"],
                         "predict_rows_per_s": round(rows / info["predict_seconds"], 1) if info["predict_seconds"] else None,
                         "errors": info["errors"]})
            log(f"  {rows:,} rows: {m['seconds']:.1f} s, {rows / m['seconds']:,.0f} rows/s, peak RSS {m['peak_rss_tree_mb']:,.0f} MiB")
    return add_ratios({
        "workers": workers if workers is not None else "default",
        "source": str(source),
        "caps": {"default": default_cap, **per_peer},
        "peer_versions": peer_versions,
        "runs": runs,
    }, next(iter(models), None))


def add_ratios(result: dict, reference: str | None) -> dict:
    """Every run's rows/s as a ratio to ``reference``'s on the same file."""
    ref_speed = {r["rows"]: r["rows_per_s"] for r in result["runs"] if r["system"] == reference}
    if reference is not None and not ref_speed:
        raise SystemExit(f"no speed runs of {reference} to compare with")
    result["reference"] = reference
    for r in result["runs"]:
        r.pop("ratio_to_reference", None)
        if r["rows"] in ref_speed:
            r["ratio_to_reference"] = round(r["rows_per_s"] / ref_speed[r["rows"]], 4)
    return result


def check_rows(out: Path, rows: int) -> None:
    out_rows = pq.ParquetFile(out).metadata.num_rows
    if out_rows != rows:
        raise SystemExit(f"{out} has {out_rows} rows, expected {rows}")


def _ratio(r: dict) -> str:
    ratio = r.get("ratio_to_reference")
    if ratio is None:
        return ""
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.3f}×"


def render(result: dict) -> str:
    ref = result["reference"]
    caps = result["caps"]
    cap_text = ", ".join(f"{k if k != 'default' else 'every peer'} ≤ {v:,} rows" for k, v in caps.items() if v is not None)
    lines = [
        f"`sentiscore score` end to end (Parquet in and out, workers {result['workers']}) and the peers' prediction "
        f"runs on the same resampled files ({result['source']}), one after the other in one run"
        + (f"; peers capped: {cap_text}" if cap_text else "") + ".",
        "",
        f"| rows | system | seconds | rows/s | rows/s vs {ref} | peak RSS (MiB) | peers: predict-only rows/s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(result["runs"], key=lambda r: (r["rows"], r["kind"] != "sentiscore")):
        predict = f"{r['predict_rows_per_s']:,.0f}" if r.get("predict_rows_per_s") else ""
        lines.append(f"| {r['rows']:,} | {r['system']} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {_ratio(r)} | "
                     f"{r['peak_rss_tree_mb']:,.0f} | {predict} |")
    lines += ["", "Peak RSS (MiB) is summed over the process and its children (sentiscore's segmentation workers)."]
    by_system: dict[str, dict[int, dict]] = {}
    for r in result["runs"]:
        by_system.setdefault(r["system"], {})[r["rows"]] = r
    growth = []
    for system, by_rows in by_system.items():
        sizes = sorted(by_rows)
        if len(sizes) >= 2 and by_rows[sizes[0]]["kind"] == "sentiscore":
            a, b = by_rows[sizes[-2]], by_rows[sizes[-1]]
            growth.append(f"- {system}, {sizes[-2]:,} → {sizes[-1]:,} rows: peak RSS with workers "
                          f"{a['peak_rss_tree_mb']:,.0f} → {b['peak_rss_tree_mb']:,.0f} MiB "
                          f"({(b['peak_rss_tree_mb'] / a['peak_rss_tree_mb'] - 1) * 100:+.1f}%), main process alone "
                          f"{a['peak_rss_main_mb']:,.0f} → {b['peak_rss_main_mb']:,.0f} MiB "
                          f"({(b['peak_rss_main_mb'] / a['peak_rss_main_mb'] - 1) * 100:+.1f}%); "
                          f"rows/s {a['rows_per_s']:,.0f} → {b['rows_per_s']:,.0f}")
    if growth:
        lines += ["", "Growth from the second-largest to the largest file:", ""] + growth
    return "\n".join(lines)


def plot(result: dict, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    systems: dict[str, list[dict]] = {}
    for r in result["runs"]:
        systems.setdefault(r["system"], []).append(r)
    for system, runs in systems.items():
        runs = sorted(runs, key=lambda r: r["rows"])
        x = [r["rows"] for r in runs]
        style = dict(marker="o", linewidth=2.2) if runs[0]["kind"] == "sentiscore" else dict(marker="s", linestyle="--", linewidth=1.2)
        ax_speed.plot(x, [r["rows_per_s"] for r in runs], label=system, **style)
        ax_mem.plot(x, [r["peak_rss_tree_mb"] for r in runs], label=system, **style)
    for ax in (ax_speed, ax_mem):
        ax.set_xscale("log")
        ax.set_xlabel("rows (Parquet in → Parquet out)")
        ax.grid(True, which="both", alpha=0.3)
    ax_speed.set_yscale("log")
    ax_speed.set_ylabel("rows/s, end to end (log)")
    ax_mem.set_ylabel("peak RSS incl. worker processes (MiB)")
    ax_mem.set_ylim(bottom=0)
    ax_speed.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def builtin_model_names() -> list[str]:
    from sentiscore.artifacts import DEFAULT_MODEL, builtin_models

    names = list(builtin_models())
    return sorted(names, key=lambda name: name != DEFAULT_MODEL)  # the default first: ratios are to it


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None,
                        help="Model directory or built-in name (repeatable; default: every built-in model). "
                             "Ratios are to the first. 'NAME=MODEL ARGS...' runs MODEL with more score "
                             "arguments under NAME, e.g. 'zh-fast/full=zh-fast --no-cascade'.")
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS), help="Row counts (default: 10k 100k 1M).")
    parser.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                        help=f"Comma-separated peers ({', '.join(PEERS)}; default: {','.join(DEFAULT_PEERS)}; '' for none).")
    parser.add_argument("--peer-max-rows", action="append", default=None, metavar="[NAME=]ROWS",
                        help=f"Largest file a peer runs (repeatable; default: {' '.join(DEFAULT_PEER_CAPS)}).")
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON,
                        help=f"Python of the bench environment with snownlp and pysenti (default: {DEFAULT_PEER_PYTHON}).")
    parser.add_argument("--peer-models", type=Path, default=None, metavar="DIR",
                        help="Pickled trained peers (bench/quality.py --save-peer-models); default OUT_DIR/peer-models; "
                             "fitted on --train when missing.")
    parser.add_argument("--train", type=Path, default=Path("build/splits/train.parquet"), help="Training split for fitting missing peers.")
    parser.add_argument("--workers", type=int, default=None, help="Passed to sentiscore score --workers (default: its own).")
    parser.add_argument("--source", type=Path, default=Path("build/splits/train.parquet"), help="Parquet file with txt and source columns.")
    parser.add_argument("--out-dir", type=Path, default=Path("build/bench"), help="Where inputs and outputs are written.")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, default=None, help="Also write all numbers to this JSON file.")
    parser.add_argument("--plot", type=Path, default=None, help="Write a PNG of rows/s and peak RSS against rows here.")
    args = parser.parse_args(argv)

    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise SystemExit(f"--peers: unknown {', '.join(unknown)} (known: {', '.join(PEERS)})")
    info = machine_info()
    models = dict(m.split("=", 1) if "=" in m else (Path(m).name, m) for m in (args.model or builtin_model_names()))
    result = run_speed(models, args.rows, peers, parse_caps(args.peer_max_rows or DEFAULT_PEER_CAPS),
                       args.source, args.out_dir, args.peer_python, args.peer_models, args.train, args.workers, args.seed)
    result["machine"] = info
    print(render(result))
    print()
    print("\n".join(machine_lines(info, result["peer_versions"])))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if args.plot:
        plot(result, args.plot, title=f"{info['date'][:10]}, {info['cpus']} CPUs")
        log(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
