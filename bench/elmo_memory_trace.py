"""Where an ELMo model's scoring process holds its memory: ``sentiscore score``
run in this process, with a line on stderr every N biLM batches giving the
process's RSS, the C library's main heap (bytes in use, freed but held, mapped
blocks; ``mallinfo2``, glibc ≥ 2.33) and the biLM's cache of token vectors
(tokens held, and their rows' size), and the blocks Python's allocator has
handed out (``sys.getallocatedblocks``).

    python bench/elmo_memory_trace.py --every 100 -- score build/bench-speed/input-1000000.parquet \
        /tmp/out.parquet --model zh-elmo --quiet --overwrite

Everything after ``--`` is sentiscore's command line. The trace wraps
``ElmoEmbedder._run``; the scoring itself is unchanged.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def traced_run(original, every: int):
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    start, calls = time.time(), [0]

    def run(self, sentences):
        out = original(self, sentences)
        calls[0] += 1
        if calls[0] % every == 0:
            heap = libc.mallinfo2()
            cache = self.token_cache
            # Rows in use, not the tables' size: on the CPU each generation is reserved whole and only written rows are resident.
            table_mib = len(cache) * cache.width * 4 / 2**20
            print(f"{time.time() - start:7.1f} s  batch {calls[0]:6d}  rss {rss_mib():7.1f} MiB  heap in use {heap.uordblks / 2**20:6.1f}"
                  f"  freed, held {heap.fordblks / 2**20:6.1f}  mapped {heap.hblkhd / 2**20:6.1f}"
                  f"  cached tokens {len(self.token_cache):7d} ({table_mib:.1f} MiB)"
                  f"  Python blocks {sys.getallocatedblocks():9d}", file=sys.stderr, flush=True)
        return out

    return run


def main() -> None:
    args = sys.argv[1:]
    every = 100
    if args[:1] == ["--every"]:
        every, args = int(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    from sentiscore.cli import cli, prefer_releasing_memory_pool

    prefer_releasing_memory_pool()  # as `score` does, but before the import below loads pyarrow
    from sentiscore.embed import elmo

    elmo.ElmoEmbedder._run = traced_run(elmo.ElmoEmbedder._run, every)
    cli(args)


if __name__ == "__main__":  # the segmentation workers are spawned: they import this module without running it
    main()
