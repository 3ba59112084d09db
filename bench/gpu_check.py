"""The GPU path of an ELMo model, checked and timed in one run on a CUDA
machine: the biLM in torch on the GPU, the classifier on ONNX Runtime.

    python bench/gpu_check.py [--model zh-elmo] [--input IN.parquet] [--out DIR] \
        [--compare-rows 100000] [--variant "batch64=--batch-size 64"] [--sample] [--profile]
    python bench/gpu_check.py --payload .devrun/payload.tar.xz --out $OUT   # on a lent device machine

Each step is independent (a failure is recorded and the next one runs):

1. the machine: GPU, driver, torch and CUDA, ONNX Runtime and its providers;
2. ``sentiscore score`` on the first ``--compare-rows`` rows with ``--device
   cuda``, each ``--variant`` (other score options, also on the GPU) and
   ``--device cpu``: labels, probabilities and top words compared
   (bench/compare_outputs.py; #16's bar: labels identical on >= 99.9% of
   rows, probabilities within 1e-3); wall seconds, rows/s, peak RSS of the
   process tree and peak GPU memory (nvidia-smi, polled); then 10,000 rows
   with ``--device auto``, whose output's embedder line must say the biLM ran
   on the GPU; ``--profile``: one more GPU run under cProfile;
3. (``--sample``) the same comparison on sample_data/reviews.csv;
4. the biLM alone on the GPU at several batch sizes (tokens/s): is 64 texts a
   batch, the CPU's default, too small for a GPU?
5. CUDA out-of-memory: a real one, not a simulated one. The caching
   allocator is capped between what one text and what a whole batch need;
   the batch must be halved until it fits and give the same vectors.

``--payload`` is for a machine that has nothing of this project but its
source: a tar.xz made by bench/gpu_payload.py holding the model directory,
its cached ONNX graph (so TensorFlow is not needed there) and the pure-Python
or prebuilt packages that machine lacks. Writes OUT/gpu-check.json and the
outputs of the comparison runs; prints a markdown table last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
OOM_TEXTS = 64


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def unpack(payload: Path, into: Path) -> dict:
    """Extract the payload; put its packages and the source on the path of
    this process and of the scoring processes; point the cache at its graph."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(payload) as archive:
        archive.extractall(into, filter="data")
    site = into / "site"
    if sys.version_info >= (3, 12):
        # elmoformanylangs imports overrides 3.x (4.x breaks it), whose decorator reads the caller's
        # bytecode and fails on Python 3.12 (IndexError in _get_base_class_names). The decorator only
        # checks that a method overrides one; at run time it returns the method unchanged, as this does.
        (site / "overrides" / "__init__.py").write_text("def overrides(method):\n    return method\n")
    paths = [str(site), str(ROOT)]
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ["SENTISCORE_CACHE_DIR"] = str(into / "cache")
    manifest = json.loads((into / "payload.json").read_text())
    return {"model": str(into / manifest["model"]), "input": str(into / manifest["input"])}


def materialise_input(path: Path, out_dir: Path) -> Path:
    """The payload carries its texts as JSON lines (xz packs them 3× smaller
    than Parquet does); scoring reads Parquet."""
    if path.suffix == ".parquet":
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    table = pa.table({"id": list(range(len(rows))), "txt": [r["txt"] for r in rows], "source": [r["source"] for r in rows]})
    out = out_dir / "input.parquet"
    pq.write_table(table, out)
    return out


def head(path: Path, rows: int, out_dir: Path) -> Path:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if rows >= table.num_rows:
        return path
    out = out_dir / f"input-{rows}.parquet"
    pq.write_table(table.slice(0, rows), out)
    return out


def machine() -> dict:
    import onnxruntime
    import torch

    info = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "onnxruntime": onnxruntime.__version__, "ort_providers": onnxruntime.get_available_providers()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["driver"] = "?"
    return info


class GpuMemoryPoller:
    """Peak memory used on GPU 0 while a command runs (nvidia-smi every
    0.2 s; it counts the CUDA context too)."""

    def __init__(self):
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=10).stdout
                self.peak_mib = max(self.peak_mib, int(out.split()[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                pass
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def score(model: str, inp: Path, out: Path, device: str, extra: tuple[str, ...] = (), profile: Path | None = None) -> dict:
    """One ``sentiscore score`` run, measured as bench/speed.py measures
    (``profile``: under cProfile, which sees the main thread only)."""
    import pyarrow.parquet as pq
    from speed import run_measured

    python = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    cmd = python + ["-m", "sentiscore", "score", str(inp), str(out), "--model", model, "--device", device,
                    "--runtime", "onnx", "--quiet", "--overwrite", *extra]
    with GpuMemoryPoller() as gpu:
        measured = run_measured(cmd)
    rows = pq.read_metadata(out).num_rows
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(out).metadata or {}).items() if k.startswith(b"sentiscore.")}
    if profile:
        import io
        import pstats

        for order in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(str(profile), stream=text).sort_stats(order).print_stats(25)
            log(f"main thread, by {order}:\n" + text.getvalue()[-6000:])
    return {**measured, "rows": rows, "rows_per_s": round(rows / measured["seconds"], 1), "peak_gpu_mib": gpu.peak_mib,
            "embedder": meta.get("sentiscore.embedder", "?"), "runtime": meta.get("sentiscore.runtime", "?")}


def segmented(model: str, inp: Path, rows: int):
    """Token lists of the first ``rows`` texts, segmented with the model's own settings."""
    import pyarrow.parquet as pq

    from sentiscore.artifacts import read_card
    from sentiscore.segment import Segmenter

    card = read_card(model)
    texts = pq.read_table(inp, columns=["txt"]).column("txt").to_pylist()[:rows]
    segmenter = Segmenter(card.segmenter_config(), card.maxlen)
    return card, segmenter.segment([t or "" for t in texts]).token_lists()


def bilm_batches(card, token_lists, sizes) -> list[dict]:
    """The biLM alone on the GPU: tokens/s at each batch size, token cache
    emptied before each (every size does the same work)."""
    import torch

    from sentiscore.embed.elmo import ElmoEmbedder

    embedder = ElmoEmbedder(card.path / "elmo", layer_mix=card.embedder.get("layer_mix", "average"), device="cuda")
    embedder.embed(token_lists[:256])  # kernels and cuDNN/cuBLAS handles, out of the timing
    tokens = sum(len(t) for t in token_lists)
    results = []
    for size in sizes:
        embedder.batch_size = size
        embedder.token_cache.clear()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        embedder.embed(token_lists)
        seconds = time.perf_counter() - started
        results.append({"batch": size, "texts": len(token_lists), "tokens": tokens, "seconds": round(seconds, 3),
                        "tokens_per_s": round(tokens / seconds), "peak_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20)})
        log(f"biLM batch {size}: {tokens / seconds:,.0f} tokens/s")
    return results


def out_of_memory(card, token_lists) -> dict:
    """Cap the allocator below what a batch of the longest texts needs and
    check that the biLM halves the batch and returns the same vectors."""
    import numpy as np
    import torch

    from sentiscore.embed.elmo import ElmoEmbedder

    longest = sorted(token_lists, key=len)[-OOM_TEXTS:]
    embedder = ElmoEmbedder(card.path / "elmo", layer_mix=card.embedder.get("layer_mix", "average"), device="cuda",
                            batch_size=OOM_TEXTS)
    reference = embedder.embed(longest)  # also fills the token cache, so the capped run only needs the encoder

    def reserved_for(texts) -> int:
        """Peak memory the caching allocator reserves for ``texts``, over
        what it holds between batches (it reserves whole segments: the cap
        must be set in its units, not in the bytes tensors ask for)."""
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        held = torch.cuda.memory_reserved()
        torch.cuda.reset_peak_memory_stats()
        embedder.embed(texts)
        return torch.cuda.max_memory_reserved() - held

    one, whole = reserved_for(longest[-1:]), reserved_for(longest)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_reserved()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = base + (one + whole) // 2
    batches = []
    run = embedder._run

    def counted(sentences):
        batches.append(len(sentences))
        return run(sentences)

    embedder._run = counted
    torch.cuda.set_per_process_memory_fraction(cap / total, 0)
    error = None
    try:
        capped = embedder.embed(longest)
    except torch.cuda.OutOfMemoryError as exc:
        error, capped = f"OutOfMemoryError: {str(exc)[:300]}", None
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        embedder._run = run
    return {"texts": len(longest), "tokens_longest": len(longest[-1]), "one_text_reserved_mib": round(one / 2**20, 2),
            "whole_batch_reserved_mib": round(whole / 2**20, 2), "cap_above_weights_mib": round((cap - base) / 2**20, 2),
            "batches_tried": batches, "halved": len(batches) > 1, **({"error": error} if error else {}),
            "max_abs_diff": float(np.max(np.abs(capped - reference))) if capped is not None else None}


def step(results: dict, name: str, func, *args):
    started = time.perf_counter()
    try:
        results[name] = func(*args)
    except (Exception, SystemExit) as exc:  # one failed step must not hide the others (run_measured exits)
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        log(f"{name}: FAILED {exc}")
    log(f"{name}: {time.perf_counter() - started:.1f} s")
    return results[name]


def table(results: dict) -> list[str]:
    m = results.get("machine", {})
    lines = [f"machine: {m.get('gpu', '?')} ({m.get('gpu_memory_gib', '?')} GiB, driver {m.get('driver', '?')}), "
             f"{m.get('cpus', '?')} CPUs; Python {m.get('python', '?')}, torch {m.get('torch', '?')} (CUDA {m.get('torch_cuda', '?')}), "
             f"onnxruntime {m.get('onnxruntime', '?')} {m.get('ort_providers', '?')}", "",
             "| run | rows | seconds | rows/s | peak RSS tree MiB | peak GPU MiB | embedder |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        if name.startswith("score ") and "seconds" in r:
            lines.append(f"| {name} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['peak_rss_tree_mb']:,.0f} | "
                         f"{r['peak_gpu_mib']:,} | {r['embedder']} |")
    lines += ["", "| comparison | rows | labels identical | max prob diff | top words identical |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        if name.startswith("compare ") and "rows" in r:
            lines.append(f"| {name} | {r['rows']:,} | {r['labels_identical']:.4%} | {r['max_prob_diff']:.1e} | {r['top_words_identical']:.4%} |")
    bilm = results.get("bilm batches")
    if isinstance(bilm, list):
        lines += ["", "| biLM batch (texts) | texts | tokens/s | peak allocated MiB |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['batch']} | {r['texts']:,} | {r['tokens_per_s']:,} | {r['peak_allocated_mib']:,} |" for r in bilm]
    oom = results.get("out of memory", {})
    if "batches_tried" in oom:
        lines += ["", f"out of memory: {oom['texts']} texts (longest {oom['tokens_longest']} tokens), one text "
                      f"{oom['one_text_reserved_mib']} MiB, the batch {oom['whole_batch_reserved_mib']} MiB, capped at {oom['cap_above_weights_mib']} MiB: "
                      f"batches tried {oom['batches_tried'][:12]}{'...' if len(oom['batches_tried']) > 12 else ''}, "
                      f"halved: {oom['halved']}, max |difference| {oom['max_abs_diff']}"]
    failed = [name for name, r in results.items() if isinstance(r, dict) and "error" in r]
    if failed:
        lines += ["", "failed: " + "; ".join(f"{n}: {results[n]['error']}" for n in failed)]
    return lines


def score_runs(results: dict, args, model: str, inp: Path, work: Path) -> None:
    """The file scored on each device and compared; the variants; ``--device
    auto``; the profiled run."""
    rows = args.compare_rows
    part = head(inp, rows, work)
    # The GPU output goes to OUT: it can be checked against another machine's CPU run too.
    step(results, f"score {rows} cuda", score, model, part, args.out / f"out-{rows}-cuda.parquet", "cuda")
    for spec in args.variant:
        name, _, options = spec.partition("=")
        step(results, f"score {rows} cuda {name}", score, model, part, work / f"out-{rows}-{name}.parquet", "cuda", tuple(options.split()))
    step(results, f"score {rows} cpu", score, model, part, work / f"out-{rows}-cpu.parquet", "cpu")
    compare = __import__("compare_outputs").compare
    step(results, f"compare {rows} cpu/cuda", compare, work / f"out-{rows}-cpu.parquet", args.out / f"out-{rows}-cuda.parquet")
    for spec in args.variant:
        name = spec.partition("=")[0]
        step(results, f"compare {rows} cuda/cuda {name}", compare, args.out / f"out-{rows}-cuda.parquet", work / f"out-{rows}-{name}.parquet")
    auto = step(results, "score 10000 auto", score, model, head(inp, 10_000, work), work / "out-auto.parquet", "auto")
    if "embedder" in auto and " on cuda" not in auto["embedder"]:
        auto["error"] = f"--device auto did not run the biLM on the GPU: {auto['embedder']}"
    if args.profile:
        step(results, f"score {rows} cuda profiled", score, model, part, work / "out-profiled.parquet", "cuda", (), work / "main.prof")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zh-elmo")
    parser.add_argument("--input", type=Path, default=None, help="Parquet with a txt column (default: the payload's, else sample_data/reviews.csv)")
    parser.add_argument("--payload", type=Path, default=None)
    parser.add_argument("--unpack-to", type=Path, default=Path("/tmp/sentiscore-gpu-check"))
    parser.add_argument("--compare-rows", type=int, default=100_000, help="rows scored and timed on both devices, and compared (0: none)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="another GPU run of those rows with these score options, e.g. 'batch64=--batch-size 64'")
    parser.add_argument("--sample", action="store_true", help="also compare the devices on sample_data/reviews.csv")
    parser.add_argument("--profile", action="store_true", help="one more GPU run under cProfile (the main thread's time)")
    parser.add_argument("--bilm-rows", type=int, default=20_000)
    parser.add_argument("--bilm-batches", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--out", type=Path, default=Path("build/gpu-check"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.unpack_to
    results: dict = {}
    model, inp = args.model, args.input
    if args.payload is not None:
        unpacked = step(results, "unpack", unpack, args.payload, work)
        model, inp = unpacked["model"], inp or Path(unpacked["input"])
    work.mkdir(parents=True, exist_ok=True)
    inp = materialise_input(inp or ROOT / "sample_data" / "reviews.csv", work)
    step(results, "machine", machine)

    if args.sample:
        sample = ROOT / "sample_data" / "reviews.csv"
        for device in ("cpu", "cuda"):
            step(results, f"score sample {device}", score, model, sample, args.out / f"sample-{device}.parquet", device)
        step(results, "compare sample cpu/cuda", lambda: __import__("compare_outputs").compare(
            args.out / "sample-cpu.parquet", args.out / "sample-cuda.parquet"))
    if args.compare_rows:
        score_runs(results, args, model, inp, work)
    loaded = step(results, "segment", lambda: segmented(model, inp, args.bilm_rows))
    if isinstance(loaded, tuple):
        card, token_lists = loaded
        results["segment"] = {"texts": len(token_lists), "tokens": sum(map(len, token_lists))}
        step(results, "bilm batches", bilm_batches, card, token_lists, args.bilm_batches)
        step(results, "out of memory", out_of_memory, card, token_lists)

    (args.out / "gpu-check.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("\n".join(table(results)))
    return 1 if any(isinstance(r, dict) and "error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
