# Peak RSS (main, tree) and seconds of `sentiscore score`, variants interleaved (BENCHMARKS.md, "Memory, 2026-12-04 (later)").
# python compare_variants.py ROWS[,ROWS] ROUNDS MODEL NAME=KEY:VALUE[;KEY:VALUE] ...
#   KEY "cwd": run from that checkout (e.g. a git worktree of the old commit); "args": extra `score` options
#   (e.g. args:--chunk-size 5000); any other KEY is an environment variable (e.g. MALLOC_MMAP_THRESHOLD_:1048576);
#   "NAME=" is this checkout as it is. Inputs: bench/speed.py's files under build/bench-speed.
import json, os, subprocess, sys, time, psutil
py = "/work/main/.venv/bin/python"
rows_list, rounds, model = [int(r) for r in sys.argv[1].split(",")], int(sys.argv[2]), sys.argv[3]
variants = {}
for spec in sys.argv[4:]:
    name, _, settings = spec.partition("=")
    variants[name] = dict(kv.split(":", 1) for kv in settings.split(";") if kv)
def measure(settings, rows):
    env = {k: v for k, v in settings.items() if k not in ("cwd", "args")}
    cmd = [py, "-m", "sentiscore", "score", f"/work/main/build/bench-speed/input-{rows}.parquet", f"/tmp/variant-{rows}.parquet",
           "--model", model, "--quiet", "--overwrite"] + settings.get("args", "").split()
    t0 = time.time(); p = subprocess.Popen(cmd, cwd=settings.get("cwd", "/work/main"), env={**os.environ, **env})
    main = psutil.Process(p.pid); pm = pt = 0
    while p.poll() is None:
        try:
            m = main.memory_info().rss; t = m + sum(c.memory_info().rss for c in main.children(recursive=True))
            pm, pt = max(pm, m), max(pt, t)
        except psutil.Error: pass
        time.sleep(0.1)
    assert p.returncode == 0
    return {"seconds": round(time.time() - t0, 2), "main_mib": round(pm / 2**20), "tree_mib": round(pt / 2**20)}
names = list(variants)
for rows in rows_list:
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            res = measure(variants[name], rows); res.update(variant=name, rows=rows, model=model, settings=variants[name])
            print(json.dumps(res, ensure_ascii=False), flush=True)
