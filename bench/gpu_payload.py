"""Pack what bench/gpu_check.py needs on a bare CUDA machine into one
tar.xz: the model directory, its ONNX graph from the cache (so TensorFlow is
not needed there), the speed input as JSON lines, and the packages that
machine lacks (installed for its Python, here, from wheels).

    python bench/gpu_payload.py [--model zh-elmo] [--source build/splits-all/train.parquet] \\
        [--rows 100000] [--wheels build/gpu-payload/whl] [--site-python python3.12] [--out .devrun/payload.tar.xz]

The wheels, for the device's Python (3.12 on the NVIDIA H200 machines lent here), made here:

    python3.12 -m pip wheel --no-deps -w build/gpu-payload/whl jieba_fast==0.53 overrides==3.1.0
    python3.12 -m pip download --no-deps -d build/gpu-payload/whl elmoformanylangs==0.0.4.post2

The device tool sends the working tree and at most 64 MiB: the built-in
models alone are 195 MB, and the graph repeats most of model.keras. So
the archive is compressed with a 192 MiB LZMA window, which stores the
graph's copy of the weights as references to model.keras's (3 files of
131 MB packed to 44 MB), and the tracked model files are emptied in the
working tree for the call (``--empty-tracked-models``; ``git checkout --
sentiscore/models`` restores them; the check reads the model from the
archive). Run the model once here first so its graph is in the cache.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WINDOW = 192 << 20
# Parts of the packages that sentiscore never imports (jieba_fast's part-of-speech tagger and keyword
# extraction: 15 MB of tables), left out to keep the call under its 64 MiB.
SKIPPED = ("jieba_fast/posseg", "jieba_fast/analyse")


def site_packages(wheels: Path, python: str, into: Path) -> Path:
    """The wheels installed for the device's Python (pure-Python ones, and
    compiled ones built for it, e.g. ``pip wheel jieba_fast`` under that Python)."""
    shutil.rmtree(into, ignore_errors=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile", "--upgrade",
                    "--target", str(into), *map(str, sorted(wheels.glob("*.whl")))], check=True)
    return into


def input_lines(source: Path, rows: int, seed: int) -> bytes:
    """bench/speed.py's input of ``rows`` rows (same draw), as JSON lines."""
    sys.path.insert(0, str(ROOT / "bench"))
    import pyarrow.parquet as pq
    from speed import make_input

    path = make_input(source, rows, ROOT / "build" / "gpu-payload" / f"input-{rows}.parquet", seed)
    table = pq.read_table(path, columns=["txt", "source"]).to_pylist()
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table).encode("utf-8")


def build(model: str, source: Path, rows: int, seed: int, wheels: Path, site_python: str, out: Path) -> Path:
    from sentiscore.artifacts import read_card
    from sentiscore.onnx_engine import graph_path, weights_path

    card = read_card(model)
    graph = graph_path(card)
    if not graph.is_file():
        raise SystemExit(f"{graph} is missing: score a file with --model {model} here first (it builds the graph)")
    site = site_packages(wheels, site_python, ROOT / "build" / "gpu-payload" / "site")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        archive.add(card.path, arcname=f"models/{card.path.name}")
        for path in (graph, weights_path(graph)):
            archive.add(path, arcname=f"cache/onnx/{path.name}")
        archive.add(site, arcname="site", filter=lambda info: None if info.name.startswith(tuple(f"site/{p}" for p in SKIPPED)) else info)
        for name, payload in (("input.jsonl", input_lines(source, rows, seed)),
                              ("payload.json", json.dumps({"model": f"models/{card.path.name}", "input": "input.jsonl"}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    packed = lzma.compress(data.getvalue(), format=lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": WINDOW}])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(packed)
    print(f"{out}: {len(packed) / 2**20:.1f} MiB ({len(data.getvalue()) / 2**20:.1f} MiB unpacked)")
    return out


def empty_tracked_models() -> None:
    """Truncate the tracked files under sentiscore/models (the working tree
    that travels must stay under 64 MiB); ``git checkout -- sentiscore/models``
    restores them."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "sentiscore/models"], capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        path = ROOT / name
        if path.stat().st_size > 64 * 1024:
            path.write_bytes(b"")
    print("tracked model files emptied: restore them with git checkout -- sentiscore/models")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zh-elmo")
    parser.add_argument("--source", type=Path, default=Path("build/splits-all/train.parquet"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=13, help="bench/speed.py's default, so the input is the speed harness's")
    parser.add_argument("--wheels", type=Path, default=Path("build/gpu-payload/whl"), help="kept out of .devrun, which travels whole")
    parser.add_argument("--site-python", default="python3.12", help="a Python of the device's version, to install the wheels for it")
    parser.add_argument("--out", type=Path, default=Path(".devrun/payload.tar.xz"))
    parser.add_argument("--empty-tracked-models", action="store_true")
    args = parser.parse_args(argv)
    if args.empty_tracked_models:
        empty_tracked_models()
        return
    build(args.model, args.source, args.rows, args.seed, args.wheels, args.site_python, args.out)


if __name__ == "__main__":
    main()
