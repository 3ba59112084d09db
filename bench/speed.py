"""Speed and memory benchmark of ``sentiscore score`` end to end.

    python bench/speed.py --model DIR_OR_NAME --rows 10000 100000 \
        [--workers 2] [--source build/splits/dev.parquet]

For each row count, resamples the source texts with replacement (fixed
seed) into build/bench/input-N.parquet (columns id, txt, source), then runs
``python -m sentiscore score IN OUT --model M --quiet --overwrite`` as a
subprocess. Wall seconds cover the whole command (interpreter start,
TensorFlow import and model load included). Peak RSS is polled every 0.1 s,
for the main process alone and summed over it and all its children (the
segmentation workers); short spikes between polls can be missed.

Needs psutil (``pip install psutil``). Prints a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
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

POLL_SECONDS = 0.1
MB = 1024 * 1024


def make_input(source: Path, rows: int, out: Path, seed: int) -> Path:
    """``rows`` rows drawn with replacement from ``source``'s texts."""
    table = pq.read_table(source, columns=["txt", "source"])
    picks = np.random.default_rng(seed).integers(0, table.num_rows, size=rows)
    sample = table.take(pa.array(picks))
    sample = sample.add_column(0, "id", pa.array(np.arange(rows, dtype=np.int64)))
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(sample, out)
    return out


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd``; wall seconds and peak RSS (main process, process tree)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
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
    return {"seconds": seconds, "peak_rss_main_mb": peak_main / MB, "peak_rss_tree_mb": peak_tree / MB}


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "?"


def machine_lines() -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "?"
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {nproc} CPUs (nproc), {cpu}; {platform.system()} {platform.release()}; Python {platform.python_version()}",
        f"- versions: sentiscore {_version('sentiscore')}, tensorflow {_version('tensorflow', 'tensorflow-cpu')}, "
        f"keras {_version('keras')}",
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Model directory or built-in name.")
    parser.add_argument("--rows", type=int, nargs="+", required=True, help="Row counts to benchmark.")
    parser.add_argument("--workers", type=int, default=None, help="Passed to sentiscore score --workers (default: its own).")
    parser.add_argument("--source", type=Path, default=Path("build/splits/dev.parquet"), help="Parquet file with txt and source columns.")
    parser.add_argument("--out-dir", type=Path, default=Path("build/bench"), help="Where inputs and outputs are written.")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)

    results = []
    for rows in args.rows:
        inp = make_input(args.source, rows, args.out_dir / f"input-{rows}.parquet", args.seed)
        out = args.out_dir / f"output-{rows}.parquet"
        cmd = [sys.executable, "-m", "sentiscore", "score", str(inp), str(out), "--model", args.model, "--quiet", "--overwrite"]
        if args.workers is not None:
            cmd += ["--workers", str(args.workers)]
        print(f"running: {' '.join(cmd)}", file=sys.stderr, flush=True)
        m = run_measured(cmd)
        out_rows = pq.ParquetFile(out).metadata.num_rows
        if out_rows != rows:
            raise SystemExit(f"{out} has {out_rows} rows, expected {rows}")
        results.append({"rows": rows, **m})

    workers = args.workers if args.workers is not None else "default"
    print(f"sentiscore score, model {args.model}, workers {workers}, source {args.source}\n")
    print("| rows | seconds | rows/s | peak RSS main (MB) | peak RSS tree (MB) |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | "
              f"{r['peak_rss_main_mb']:,.0f} | {r['peak_rss_tree_mb']:,.0f} |")
    print()
    print("\n".join(machine_lines()))


if __name__ == "__main__":
    main()
