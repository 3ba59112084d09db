# Peak RSS (main, tree) and seconds of `score --model zh-elmo`, old code (a git worktree of 4de3550 at /tmp/old-wt) against new (this checkout), interleaved.
# python compare_worktrees.py 10000,100000 2 [MODEL]   (rows, rounds, model: zh-elmo); inputs from bench/speed.py under build/bench-speed.
import json, subprocess, sys, time, psutil, os
variants = {"old": "/tmp/old-wt", "new": "/work/main"}
py = "/work/main/.venv/bin/python"
model = sys.argv[3] if len(sys.argv) > 3 else "zh-elmo"
def measure(cwd, rows, extra=()):
    cmd = [py, "-m", "sentiscore", "score", f"/work/main/build/bench-speed/input-{rows}.parquet", f"/tmp/memout-{rows}.parquet",
           "--model", model, "--quiet", "--overwrite", *extra]
    t0 = time.time(); p = subprocess.Popen(cmd, cwd=cwd); main = psutil.Process(p.pid); pm = pt = 0
    while p.poll() is None:
        try:
            m = main.memory_info().rss; t = m + sum(c.memory_info().rss for c in main.children(recursive=True))
            pm, pt = max(pm, m), max(pt, t)
        except psutil.Error: pass
        time.sleep(0.1)
    assert p.returncode == 0
    return {"seconds": round(time.time() - t0, 2), "main_mib": round(pm / 2**20), "tree_mib": round(pt / 2**20)}
plan = [(int(r), v) for r in sys.argv[1].split(",") for _ in range(int(sys.argv[2])) for v in (("old", "new") if _ % 2 == 0 else ("new", "old"))]
for rows, v in plan:
    res = measure(variants[v], rows); res.update(variant=v, rows=rows, model=model)
    print(json.dumps(res), flush=True)
