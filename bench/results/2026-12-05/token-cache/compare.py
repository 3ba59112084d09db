# Peak RSS (main, process tree) and seconds of zh-elmo's `score`, variants interleaved (BENCHMARKS.md, "Memory, 2026-12-05 (later)").
# python compare.py INPUT[,INPUT] ROUNDS NAME=SPEC ...   SPEC: "old:DIR" (a checkout of the code before, run as is)
# or "gen:ROWS" (this checkout, the token cache's generations of ROWS rows, its counters in "token_cache"),
# optionally followed by "+NAME=VALUE..." environment settings for that run (e.g. "gen:24576+MALLOC_ARENA_MAX=2").
import json, os, sys
from pathlib import Path

py, here = "/work/main/.venv/bin/python", Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2]))  # bench/
from speed import run_measured  # noqa: E402  (polls the process tree's RSS every 0.1 s)
inputs, rounds = sys.argv[1].split(","), int(sys.argv[2])
variants = dict(spec.split("=", 1) for spec in sys.argv[3:])


def command(spec: str, inp: str, out: str) -> tuple[list[str], str]:
    kind, _, value = spec.split("+")[0].partition(":")
    args = ["score", str(Path(inp).resolve()), out, "--model", "zh-elmo", "--quiet", "--overwrite"]
    if kind == "old":
        return [py, "-m", "sentiscore", *args], value
    return [py, str(here / "run_with_generation.py"), value, *args], "/work/main"


def measure(spec: str, inp: str, out: str) -> dict:
    cmd, cwd = command(spec, inp, out)
    stats = Path(f"/tmp/token-cache-stats-{os.getpid()}.json"); stats.unlink(missing_ok=True)
    settings = dict(pair.split("=", 1) for pair in spec.split("+")[1:])
    run = run_measured(cmd, cwd=cwd, env={**os.environ, **settings, "TOKEN_CACHE_STATS": str(stats)})
    result = {"seconds": round(run["seconds"], 2), "main_mib": round(run["peak_rss_main_mb"]), "tree_mib": round(run["peak_rss_tree_mb"])}
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
