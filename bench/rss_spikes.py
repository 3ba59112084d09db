"""When a scoring process reaches its peak RSS, and what it is doing then:
``sentiscore score`` run in this process while a thread reads the RSS every
2 ms and notes, for each chunk, its highest reading, the stage each
thread was in at that moment (reading, segmentation, the biLM, the
classifier, output columns, writing) and glibc's heaps then. Printed at the
end: the chunks' peaks (quantiles, and in order), the ten highest with their
stages and the chunk's size in tokens, and each stage's highest reading.

    python bench/rss_spikes.py -- score build/bench-speed/input-1000000.parquet /tmp/out.parquet \
        --model zh-elmo --quiet --overwrite

Everything after ``--`` is sentiscore's command line; the scoring itself is
unchanged (the wrappers only set labels). The reading is the main process's,
not its segmentation workers'.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from elmo_memory_trace import MallInfo2, rss_mib  # noqa: E402


@functools.cache
def _mallinfo2():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2


def heap_line() -> str:
    """glibc's heaps, all arenas (``mallinfo2``, glibc >= 2.33): in use, freed but held, mapped blocks."""
    try:
        info = _mallinfo2()()
    except (OSError, AttributeError):
        return "heap: -"
    return f"heap in use {info.uordblks / 2**20:.0f}, freed but held {info.fordblks / 2**20:.0f}, mapped {info.hblkhd / 2**20:.0f}"


class Stages:
    """Each thread's current stage and the chunk it works on."""

    def __init__(self):
        self.by_thread: dict[str, str] = {}
        self.chunk_of: dict[int, int] = {}  # id(Prepared) -> chunk number
        self.chunks = 0
        self.current_chunk = -1  # the chunk in the model's hands (forward/postprocess/write)
        self.tokens: dict[int, tuple[int, int, int]] = {}  # chunk -> (distinct texts, tokens, longest)

    def wrap(self, owner, name: str, label: str):
        original = getattr(owner, name)
        stages = self

        def wrapped(*args, **kwargs):
            thread = threading.current_thread().name
            before = stages.by_thread.get(thread)
            stages.by_thread[thread] = label
            try:
                return original(*args, **kwargs)
            finally:
                if before is None:
                    stages.by_thread.pop(thread, None)
                else:
                    stages.by_thread[thread] = before

        setattr(owner, name, wrapped)

    def snapshot(self) -> str:
        return ", ".join(f"{t}: {s}" for t, s in sorted(self.by_thread.items())) or "-"


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    from sentiscore.cli import cli, prefer_releasing_memory_pool

    prefer_releasing_memory_pool()  # as `score` does, before pyarrow is loaded
    from sentiscore import io as sio
    from sentiscore import onnx_engine, pipeline
    from sentiscore.embed import elmo

    stages = Stages()
    preprocess, forward = pipeline.Scorer.preprocess, pipeline.Scorer.forward

    def counted_preprocess(self, texts):
        prepared = preprocess(self, texts)
        stages.chunk_of[id(prepared)] = stages.chunks
        stages.chunks += 1
        holder = type("Holder", (), {"wait": staticmethod(prepared.segmentation)})
        stages.wrap(holder, "wait", "waiting for segmentation")  # an attribute of each chunk, not a method
        prepared.segmentation = holder.wait
        return prepared

    def numbered_forward(self, prepared, *a, **k):
        chunk = stages.chunk_of.get(id(prepared), -1)
        stages.current_chunk = chunk
        out = forward(self, prepared, *a, **k)
        lengths = out.segmented.lengths
        stages.tokens[chunk] = (int(lengths.size), int(lengths.sum()), int(lengths.max(initial=0)))
        return out

    pipeline.Scorer.preprocess, pipeline.Scorer.forward = counted_preprocess, numbered_forward
    stages.wrap(pipeline.Scorer, "preprocess", "preprocess (next chunk)")
    stages.wrap(pipeline.Scorer, "forward", "forward")
    stages.wrap(pipeline.Scorer, "postprocess", "postprocess")
    stages.wrap(elmo.ElmoEmbedder, "_vectors", "biLM")
    stages.wrap(onnx_engine.OnnxPredictor, "__call__", "classifier")
    stages.wrap(sio.FileSink, "write", "write")

    peaks: dict[int, tuple[float, str]] = {}
    by_stage: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            rss = rss_mib()
            chunk = stages.current_chunk
            if rss > peaks.get(chunk, (0.0, ""))[0] + 0.5:  # mallinfo2 walks the heaps: not on every page
                peaks[chunk] = (rss, f"{stages.snapshot()}; {heap_line()}")
            for label in set(stages.by_thread.values()):
                by_stage[label] = max(by_stage.get(label, 0.0), rss)
            time.sleep(0.002)

    poller = threading.Thread(target=poll, name="rss-poller", daemon=True)
    poller.start()
    started = time.time()
    try:
        cli(args, standalone_mode=False)
    finally:
        done.set()
        poller.join()
    report(peaks, by_stage, stages, time.time() - started)


def report(peaks, by_stage, stages, seconds: float) -> None:
    chunk_peaks = np.array([rss for chunk, (rss, _) in peaks.items() if chunk >= 0])
    out = sys.stderr
    print(f"\n{stages.chunks} chunks in {seconds:.0f} s; main process's peak RSS {max(r for r, _ in peaks.values()):.1f} MiB", file=out)
    if chunk_peaks.size:
        q = np.percentile(chunk_peaks, [0, 25, 50, 75, 90, 100])
        print("chunks' peaks (MiB): min {:.1f}, p25 {:.1f}, median {:.1f}, p75 {:.1f}, p90 {:.1f}, max {:.1f}".format(*q), file=out)
    print("ten highest chunks: chunk, peak MiB, (distinct texts, tokens, longest), stages at the peak", file=out)
    for chunk, (rss, where) in sorted(peaks.items(), key=lambda kv: -kv[1][0])[:10]:
        print(f"  {chunk:5d}  {rss:7.1f}  {stages.tokens.get(chunk)}  {where}", file=out)
    print("chunks' peaks in order (MiB), the first 12 and then every 10th:", file=out)
    shown = [c for c in sorted(peaks) if 0 <= c < 12 or c % 10 == 0]
    print("  " + "  ".join(f"{c}: {peaks[c][0]:.0f}" for c in shown), file=out)
    print("each stage's highest reading (MiB):", file=out)
    for label, rss in sorted(by_stage.items(), key=lambda kv: -kv[1]):
        print(f"  {rss:7.1f}  {label}", file=out)


if __name__ == "__main__":  # the segmentation workers are spawned: they import this module without running it
    main()
