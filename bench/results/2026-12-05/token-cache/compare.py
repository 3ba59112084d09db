# Peak RSS (main, process tree) and seconds of zh-elmo's `score`, variants interleaved (BENCHMARKS.md, "Memory, 2026-12-05 (later)").
# python compare.py INPUT[,INPUT] ROUNDS NAME=SPEC ...   SPEC: "old:DIR" (a checkout of the code before, run as is)
# or "gen:ROWS" (this checkout, the token cache's generations of ROWS rows, its counters in "token_cache").
import json, os, subprocess, sys, time
from pathlib import Path

import psutil

py, here = "/work/main/.venv/bin/python", Path(__file__).resolve().parent
inputs, rounds = sys.argv[1].split(","), int(sys.argv[2])
variants = dict(spec.split("=", 1) for spec in sys.argv[3:])


def command(spec: str, inp: str, out: str) -> tuple[list[str], str]:
    kind, _, value = spec.partition(":")
    args = ["score", str(Path(inp).resolve()), out, "--model", "zh-elmo", "--quiet", "--overwrite"]
    if kind == "old":
        return [py, "-m", "sentiscore", *args], value
    return [py, str(here / "run_with_generation.py"), value, *args], "/work/main"


def measure(spec: str, inp: str, out: str) -> dict:
    cmd, cwd = command(spec, inp, out)
    stats = Path(f"/tmp/token-cache-stats-{os.getpid()}.json"); stats.unlink(missing_ok=True)
    t0 = time.time(); p = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, "TOKEN_CACHE_STATS": str(stats)})
    main = psutil.Process(p.pid); pm = pt = 0
    while p.poll() is None:
        try:
            m = main.memory_info().rss; t = m + sum(c.memory_info().rss for c in main.children(recursive=True))
            pm, pt = max(pm, m), max(pt, t)
        except psutil.Error: pass
        time.sleep(0.1)
    assert p.returncode == 0, cmd
    result = {"seconds": round(time.time() - t0, 2), "main_mib": round(pm / 2**20), "tree_mib": round(pt / 2**20)}
    if stats.is_file():  # gen: runs write the cache's counters (run_with_generation.py)
        result["token_cache"] = json.loads(stats.read_text())
    return result


names = list(variants)
for inp in inputs:
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            out = f"/tmp/token-cache-{name}-{Path(inp).stem}.parquet"
            res = measure(variants[name], inp, out); res.update(variant=name, spec=variants[name], input=inp, out=out)
            print(json.dumps(res), flush=True)
