"""What two memray captures hold at their high-water marks, by call stack,
largest change first: where a longer file's extra memory sits.

    pip install memray    # a profiling tool, not a dependency of sentiscore
    memray run --native -o build/memray/10k.bin -m sentiscore score build/bench-speed/input-10000.parquet \
        /tmp/out.parquet --model zh-elmo --quiet --overwrite      # and the same for input-100000
    python bench/memray_high_water.py build/memray/10k.bin build/memray/100k.bin

memray counts bytes allocated, not pages touched: oneDNN's JIT code buffers
(``Xbyak``) are reserved large and mostly untouched, so they are totalled on
a line of their own. The segmentation workers are spawned processes that
memray does not follow; this is the main process only.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

MIB = 2**20


def high_water_by_stack(capture: Path) -> tuple[collections.Counter, int]:
    from memray import FileReader

    by_stack: collections.Counter = collections.Counter()
    jit = 0
    for record in FileReader(capture).get_high_watermark_allocation_records(merge_threads=True):
        frames = record.hybrid_stack_trace(max_stacks=60)
        if any("Xbyak" in frame[0] for frame in frames):
            jit += record.size
            continue
        python = [f"{name}:{Path(file).name}:{line}" for name, file, line in frames if ".py" in file]
        native = [name[:60] for name, file, _ in frames if ".py" not in file][:3]
        by_stack[" <- ".join(python[:5]) + " | " + " < ".join(native)] += record.size
    return by_stack, jit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="memray capture of the shorter run")
    parser.add_argument("after", type=Path, help="memray capture of the longer run")
    parser.add_argument("--top", type=int, default=20, help="Stacks to print (largest change first).")
    args = parser.parse_args()
    (before, jit_before), (after, jit_after) = high_water_by_stack(args.before), high_water_by_stack(args.after)
    print(f"at the high-water mark, MiB: oneDNN JIT code {jit_before / MIB:.1f} -> {jit_after / MIB:.1f}; "
          f"the rest {sum(before.values()) / MIB:.1f} -> {sum(after.values()) / MIB:.1f}")
    print(f"{'before':>8} {'after':>8} {'change':>8}  stack (Python frames | first native frames)")
    for stack in sorted(set(before) | set(after), key=lambda s: abs(after[s] - before[s]), reverse=True)[: args.top]:
        print(f"{before[stack] / MIB:8.1f} {after[stack] / MIB:8.1f} {(after[stack] - before[stack]) / MIB:+8.1f}  {stack[:330]}")


if __name__ == "__main__":
    main()
