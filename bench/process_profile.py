"""Where `sentiscore score`'s CPU goes, process by process, and what the
segmentation workers cost on their own.

    python bench/process_profile.py --input build/bench-speed/input-100000.parquet \
        [--variant "default=" --variant "nice0=--worker-nice 0"] [--rounds 3] [--segmentation]

For each round, every variant runs once, one after the other (interleaved,
so the machine's drift hits them alike): wall seconds, CPU seconds of the
main process (which runs the model) and of its segmentation workers
(getrusage of the process and of its waited-for children). ``--segmentation``
also measures jieba alone on the file's texts, deduplicated per chunk as
`score` does: in this process, and on a pool of 1 and of 2 worker processes
with nothing else running; on a machine whose cores do not scale, the pool
burns more CPU for the same texts. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs `sentiscore score` in a child Python and reports its own and its children's
# CPU at exit. Spawned workers do not re-run `-c` code, so no __main__ guard is needed.
_WRAPPER = """
import atexit, json, resource, sys, time
start = time.perf_counter()
def report():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print("PROFILE " + json.dumps({"wall": time.perf_counter() - start, "main": own.ru_utime + own.ru_stime,
                                   "workers": kids.ru_utime + kids.ru_stime}), file=sys.stderr)
atexit.register(report)
from sentiscore.cli import cli
cli(sys.argv[1:], prog_name="sentiscore")
"""


def run_score(input_path: str, extra: list[str], model: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.parquet"
        cmd = [sys.executable, "-c", _WRAPPER, "score", input_path, str(out), "--model", model, "--quiet", "--overwrite", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.startswith("PROFILE ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{shlex.join(cmd[3:])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def segmentation_costs(input_path: str, model: str, chunk_size: int) -> list[tuple[str, float, float]]:
    """(setting, wall seconds, CPU seconds) for segmenting the file's texts."""
    import resource

    import pyarrow.parquet as pq

    from sentiscore.artifacts import read_card
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from sentiscore.segment import ParallelSegmenter, Segmenter, _init_worker

    card = read_card(model)
    trained = card.members[0] if card.members else card
    texts = [t for t in pq.read_table(input_path, columns=["txt"]).column(0).to_pylist() if isinstance(t, str)]
    chunks = [list(dict.fromkeys(texts[i : i + chunk_size])) for i in range(0, len(texts), chunk_size)]
    results = []
    segmenter = Segmenter(trained.segmenter_config(), trained.maxlen)
    wall, cpu = time.perf_counter(), time.process_time()
    for chunk in chunks:
        segmenter.segment(chunk)
    results.append((f"this process ({sum(map(len, chunks)):,} texts)", time.perf_counter() - wall, time.process_time() - cpu))
    for workers in (1, 2):
        # ParallelSegmenter segments in this process when it has one worker: give it a pool of one instead.
        pool = ParallelSegmenter(trained.segmenter_config(), trained.maxlen, max(2, workers))
        pool.min_parallel_texts = 1
        if workers == 1:
            pool._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                             initargs=(pool.config, pool.maxlen, pool.stopwords))
            pool._slices = lambda texts: [texts]
        pool.segment(["热身"] * 4)  # start-up (dictionary loading) is not counted
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_before, wall = time.process_time(), time.perf_counter()
        for chunk in chunks:
            pool.segment(chunk)
        elapsed = time.perf_counter() - wall
        own = time.process_time() - own_before
        pool.close()  # workers are waited for here, so their CPU is counted
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        workers_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        results.append((f"{workers} worker process{'es' if workers > 1 else ''} (their start-up included in CPU)", elapsed, workers_cpu + own))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="a Parquet file with a txt column (bench/speed.py writes them)")
    parser.add_argument("--model", default="zh-fast")
    parser.add_argument("--variant", action="append", default=None, metavar="NAME=ARGS",
                        help='extra `score` arguments per variant (default: "default=" and "nice0=--worker-nice 0")')
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--segmentation", action="store_true", help="also measure segmentation alone")
    parser.add_argument("--chunk-size", type=int, default=10_000)
    args = parser.parse_args()
    variants = [v.split("=", 1) for v in (args.variant or ["default=", "nice0=--worker-nice 0"])]

    runs: dict[str, list[dict]] = {name: [] for name, _ in variants}
    for _ in range(args.rounds):
        for name, extra in variants:
            runs[name].append(run_score(args.input, shlex.split(extra), args.model))
    print(f"`sentiscore score` on {args.input}, model {args.model}, {args.rounds} interleaved rounds\n")
    print("| variant | wall s (each round) | mean wall s | main CPU s | workers CPU s |")
    print("|---|---|---:|---:|---:|")
    for name, results in runs.items():
        walls = " / ".join(f"{r['wall']:.1f}" for r in results)
        print(f"| {name} | {walls} | {statistics.mean(r['wall'] for r in results):.2f} | "
              f"{statistics.mean(r['main'] for r in results):.2f} | {statistics.mean(r['workers'] for r in results):.2f} |")
    if args.segmentation:
        print(f"\nSegmentation alone (chunks of {args.chunk_size:,}, distinct texts per chunk):\n")
        print("| where | wall s | CPU s |")
        print("|---|---:|---:|")
        for setting, wall, cpu in segmentation_costs(args.input, args.model, args.chunk_size):
            print(f"| {setting} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
