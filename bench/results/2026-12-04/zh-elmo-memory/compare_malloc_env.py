# Peak RSS (main, tree) and seconds of `score`, one variant per environment (e.g. glibc malloc settings), interleaved (BENCHMARKS.md, "Memory, 2026-12-04 (later)").
# python compare_malloc_env.py ROWS[,ROWS] ROUNDS MODEL VARIANT=ENV[;ENV] ...   (VARIANT "default" = no extra env)
import json, os, subprocess, sys, time, psutil
py = "/work/main/.venv/bin/python"
rows_list, rounds, model = [int(r) for r in sys.argv[1].split(",")], int(sys.argv[2]), sys.argv[3]
variants = {}
for spec in sys.argv[4:]:
    name, _, env = spec.partition("=")
    variants[name] = dict(kv.split(":", 1) for kv in env.split(";") if kv)
def measure(env, rows):
    cmd = [py, "-m", "sentiscore", "score", f"/work/main/build/bench-speed/input-{rows}.parquet", f"/tmp/mm-{rows}.parquet",
           "--model", model, "--quiet", "--overwrite"]
    t0 = time.time(); p = subprocess.Popen(cmd, cwd="/work/main", env={**os.environ, **env}); main = psutil.Process(p.pid); pm = pt = 0
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
            res = measure(variants[name], rows); res.update(variant=name, rows=rows, model=model, env=variants[name])
            print(json.dumps(res, ensure_ascii=False), flush=True)
