# Large allocations in a memray capture, grouped by their three innermost Python frames (BENCHMARKS.md,
# "Memory, 2026-12-05 (allocator)"): how many, how many distinct sizes, bytes in all, the largest.
#   python -m memray run --native -q -o CAPTURE.bin -m sentiscore score IN OUT --model zh-elmo --quiet --overwrite
#   python large_allocations.py CAPTURE.bin [MIN_BYTES]      (default 512 KiB)
import sys, collections
from memray import FileReader, AllocatorType
reader = FileReader(sys.argv[1])
MIN = int(sys.argv[2]) if len(sys.argv) > 2 else 512 * 1024
groups = collections.defaultdict(lambda: [0, set(), 0])
n = 0
for rec in reader.get_allocation_records():
    if rec.allocator in (AllocatorType.FREE, AllocatorType.MUNMAP) or rec.size < MIN:
        continue
    n += 1
    try:
        stack = rec.hybrid_stack_trace(max_stacks=40)
    except Exception:
        stack = rec.stack_trace(max_stacks=10)
    py = [f"{f[0]}:{f[2]}" for f in stack if f[1].endswith(".py")][:3]
    key = " <- ".join(py) or str(stack[:2])
    g = groups[key]; g[0] += 1; g[1].add(rec.size); g[2] += rec.size
print(n, "allocations >=", MIN)
for key, (count, sizes, total) in sorted(groups.items(), key=lambda kv: -kv[1][2])[:25]:
    print(f"{count:7d} allocs {len(sizes):6d} sizes, {total/2**30:7.2f} GiB, max {max(sizes)/2**20:6.1f} MiB  {key}")
