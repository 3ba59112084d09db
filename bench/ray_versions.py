"""The Ray tests on each supported Ray release, each in a virtualenv of its own.

    python bench/ray_versions.py                      # the oldest allowed by setup.cfg's ray extra (2.58.0)
    python bench/ray_versions.py 2.58.0 2.60.0        # any releases

CI installs the newest Ray the ``ray`` extra allows and runs every test; this
script covers the oldest (two Ray releases in CI would double the Ray tests'
minutes). For each version it makes build/ray-versions/venv-VERSION (kept, so
a second run only re-runs the tests), installs this checkout with
``pip install -e ".[cpu,dev]"`` plus ``ray[data]==VERSION`` and the extra's
other requirements, then runs

    python -m pytest -q tests/test_ray_engine.py tests/test_ray_*.py

and prints a markdown table: Ray version, tests passed / failed / skipped,
seconds. Exits 1 if any version failed.
"""

from __future__ import annotations

import argparse
import configparser
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ray_extra() -> list[str]:
    """The requirements of setup.cfg's ray extra."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return [line.strip() for line in config["options.extras_require"]["ray"].splitlines() if line.strip()]


def oldest_allowed(requirements: list[str]) -> str:
    for requirement in requirements:
        found = re.match(r"ray(\[[^\]]*\])?\s*>=\s*([\d.]+)", requirement)
        if found:
            version = found.group(2)
            return version if version.count(".") == 2 else version + ".0"
    raise SystemExit("setup.cfg's ray extra has no ray>=X requirement")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT, **kwargs)


def test_version(version: str, requirements: list[str], venvs: Path) -> dict:
    venv = venvs / f"venv-{version}"
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)], check=True)
        others = [r for r in requirements if not re.match(r"ray(\[|\s|>|=|<|$)", r)]
        run([str(python), "-m", "pip", "install", "-q", "-e", ".[cpu,dev]", f"ray[data]=={version}", *others], check=True)
    installed = subprocess.run([str(python), "-c", "import ray; print(ray.__version__)"], capture_output=True, text=True,
                               check=True).stdout.strip()
    tests = sorted({"tests/test_ray_engine.py", *(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_ray_*.py"))})
    started = time.perf_counter()
    result = run([str(python), "-m", "pytest", "-q", "-rs", *tests], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    sys.stderr.write(result.stdout[-3000:] + result.stderr[-2000:])
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    return {"version": installed, "ok": result.returncode == 0, "seconds": seconds, **counts}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="*", help="Ray releases (default: the oldest the ray extra allows).")
    parser.add_argument("--venvs", type=Path, default=ROOT / "build" / "ray-versions", help="Where the virtualenvs are kept.")
    args = parser.parse_args(argv)
    requirements = ray_extra()
    versions = args.versions or [oldest_allowed(requirements)]
    results = [test_version(v, requirements, args.venvs) for v in versions]
    print(f"Ray tests (tests/test_ray_*.py), setup.cfg ray extra: {', '.join(requirements)}\n")
    print("| ray | passed | failed | skipped | seconds |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        failed = r.get("failed", 0) + r.get("error", 0) + r.get("errors", 0)
        print(f"| {r['version']} | {r.get('passed', 0)} | {failed} | {r.get('skipped', 0)} | {r['seconds']:.0f} |")
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
