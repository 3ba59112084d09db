"""--engine ray on several Ray nodes, all on this machine
(``ray.cluster_utils.Cluster``): a head without CPUs (it only runs the
driver's connection) and two worker nodes, each its own raylet with 2 CPUs
and room for one scoring actor (1.5 GiB of Ray's memory resource against
the actor's 1 GiB), so two actors always land on different nodes.

- node A has a logical GPU (``num_gpus=1``): Ray schedules on it as on a
  real one; TensorFlow (CPU build) finds no device and runs on the CPU;
- node B's worker processes start in a mount namespace of their own where
  one directory is hidden under an empty tmpfs: a model put there exists for
  the driver and node A, and is missing on node B, as on a cluster whose
  node lacks the shared mount.

The model reaches every node by path; the results equal the local engine's
row for row; a missing model is reported naming the node; a node killed in
the middle of a run either completes through Ray's retries, row for row, or
fails with the documented message, and never drops rows silently.
"""

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sentiscore.cli import cli
from sentiscore.config import ScoreConfig
from sentiscore.errors import UsageError, WorkerError
from sentiscore.pipeline import score_file

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from sentiscore.ray_engine import ACTOR_MEMORY_BYTES, RayOptions, score_with_ray  # noqa: E402

NODE_MEMORY = ACTOR_MEMORY_BYTES * 3 // 2  # one scoring actor per node
FLOATS = ("confidence", "prob_负评", "prob_中评", "prob_正评")

# Replaces Ray's default_worker.py on node B: each worker process of that node
# gets its own mount namespace, with an empty tmpfs over HIDDEN, then runs the
# real worker. As root (this project's CI) the mount namespace alone will do;
# otherwise a user namespace of its own lets the process mount.
HIDING_WORKER = '''
import ctypes, os, runpy, sys
HIDDEN, REAL = {hidden!r}, {real!r}
CLONE_NEWNS, CLONE_NEWUSER, MS_REC, MS_PRIVATE = 0x00020000, 0x10000000, 0x4000, 0x40000
libc = ctypes.CDLL(None, use_errno=True)
def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, what + ": " + os.strerror(err))
if libc.unshare(CLONE_NEWNS) != 0:
    uid, gid = os.getuid(), os.getgid()
    check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{{uid}} {{uid}} 1"), ("gid_map", f"{{gid}} {{gid}} 1")):
        with open("/proc/self/" + name, "w") as f:
            f.write(text)
check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
check(libc.mount(b"tmpfs", HIDDEN.encode(), b"tmpfs", 0, None), "mount a tmpfs over " + HIDDEN)
if sys.argv[1:] == ["--probe"]:
    sys.exit(0 if not os.listdir(HIDDEN) else 3)
sys.argv = [REAL, *sys.argv[1:]]
runpy.run_path(REAL, run_name="__main__")
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    hidden = tmp_path_factory.mktemp("not-on-node-b")
    (hidden / "marker").write_text("visible")
    worker = tmp_path_factory.mktemp("node-b") / "hiding_worker.py"
    real = os.path.join(os.path.dirname(ray.__file__), "_private", "workers", "default_worker.py")
    worker.write_text(HIDING_WORKER.format(hidden=str(hidden), real=real))
    probe = subprocess.run([sys.executable, str(worker), "--probe"], capture_output=True, text=True)
    hiding = probe.returncode == 0
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = {
            "a": cluster.add_node(num_cpus=2, num_gpus=1, memory=NODE_MEMORY, resources={"node_a": 1}),
            "b": cluster.add_node(num_cpus=2, memory=NODE_MEMORY, resources={"node_b": 1},
                                  **({"worker_path": str(worker)} if hiding else {})),
        }
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.ERROR)
        yield SimpleNamespace(cluster=cluster, nodes=nodes, hidden=hidden, hiding=hiding,
                              why_not=probe.stderr.strip().splitlines()[-1:] if not hiding else None)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def three_csv_files(sample_dir, tmp_path_factory):
    lines = (sample_dir / "reviews.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    inp = tmp_path_factory.mktemp("in")
    for name, start, stop in (("a.csv", 0, 70), ("b.csv", 70, 195), ("c.csv", 195, 300)):
        (inp / name).write_text(lines[0] + "".join(lines[1 + start:1 + stop]), encoding="utf-8")
    return inp


def local_rows(model, inp, out_dir, chunk_size):
    """The local engine's output for each file of ``inp``, concatenated."""
    tables = []
    for path in sorted(inp.iterdir()):
        out = out_dir / f"local-{path.stem}.parquet"
        score_file(path, out, model=model, config=ScoreConfig(workers=1, chunk_size=chunk_size))
        tables.append(pq.read_table(out))
    return pa.concat_tables(tables)


def assert_same_rows(out, local):
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))])
    assert table.column_names == local.column_names and table.num_rows == local.num_rows
    for name in table.column_names:
        if name in FLOATS:
            np.testing.assert_allclose(table.column(name).to_numpy(), local.column(name).to_numpy(), atol=1e-6)
        else:
            assert table.column(name).to_pylist() == local.column(name).to_pylist(), name


class ResourceWatch:
    """The least of each resource left free while a run goes (polled)."""

    def __init__(self):
        self.least, self._stop = {}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            free = ray.available_resources()  # leaves out what is all taken
            for name in ray.cluster_resources():
                self.least[name] = min(self.least.get(name, free.get(name, 0.0)), free.get(name, 0.0))
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_a_directory_scored_across_two_nodes_equals_the_local_engine(cluster, tiny_model, three_csv_files, tmp_path):
    local = local_rows(tiny_model, three_csv_files, tmp_path, chunk_size=20)
    out = tmp_path / "scored"
    with ResourceWatch() as watch:
        summary = score_with_ray(three_csv_files, out, model=tiny_model, config=ScoreConfig(chunk_size=20))
    assert summary.rows == 300
    assert_same_rows(out, local)
    run = (out / "_sentiscore_run.json").read_text()
    assert '"num_workers": 2' in run  # the default: half the cluster's 4 CPUs
    # Both actors held their memory at once; a node has room for one: one ran on A, one on B.
    assert ray.cluster_resources()["memory"] - watch.least["memory"] >= 2 * ACTOR_MEMORY_BYTES


def test_a_model_directory_missing_on_one_node_names_that_node(cluster, tiny_model, three_csv_files, tmp_path):
    if not cluster.hiding:
        pytest.skip(f"cannot hide a directory from one node here (no mount namespace: {cluster.why_not})")

    @ray.remote(num_cpus=0)
    def sees(path):
        return os.path.exists(path)

    marker = str(cluster.hidden / "marker")
    assert ray.get(sees.options(resources={"node_a": 0.01}).remote(marker))
    assert not ray.get(sees.options(resources={"node_b": 0.01}).remote(marker))  # the simulation holds
    model = cluster.hidden / "tiny"
    shutil.copytree(tiny_model, model)
    out = tmp_path / "scored"
    result = CliRunner().invoke(cli, ["score", str(three_csv_files), str(out), "--model", str(model), "--engine", "ray",
                                      "--chunk-size", "20"])
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2, result.output
    assert (f"model directory {model} is not visible on Ray node {os.uname().nodename} "
            f"(node id {cluster.nodes['b'].node_id}): put it on storage that every node mounts at the same path") in message
    # Our error on stderr; Ray itself may print its raylet's retry notice (with
    # the worker's traceback) on stdout, which the README mentions.
    assert "Traceback" not in result.stderr and result.stderr.startswith("Error: "), result.stderr
    assert not out.exists() and not list(tmp_path.glob(".scored.sentiscore-*"))


def test_a_logical_gpu_takes_the_scoring_actor(cluster, tiny_model, three_csv_files, tmp_path):
    """--gpus-per-worker 1 on a cluster whose one GPU is node A's: one actor,
    holding that GPU, scoring every row (TensorFlow runs it on the CPU)."""
    with pytest.raises(UsageError, match="--gpus-per-worker 2: the Ray cluster has 1 GPUs"):
        score_with_ray(three_csv_files, tmp_path / "none", model=tiny_model, options=RayOptions(gpus_per_worker=2))
    local = local_rows(tiny_model, three_csv_files, tmp_path, chunk_size=50)
    out = tmp_path / "scored"
    with ResourceWatch() as watch:
        summary = score_with_ray(three_csv_files, out, model=tiny_model, config=ScoreConfig(chunk_size=50),
                                 options=RayOptions(gpus_per_worker=1))
    assert summary.rows == 300 and '"num_workers": 1' in (out / "_sentiscore_run.json").read_text()
    assert watch.least["GPU"] == 0  # the actor held node A's GPU
    assert_same_rows(out, local)


def test_a_node_killed_mid_run_never_drops_rows(cluster, tiny_model, sample_dir, tmp_path):
    """A third node joins; three actors (one per node) start scoring 3,000
    rows; node C is removed (raylet and workers killed) once parts are being
    written, and a fresh node D joins, as a cluster would replace it."""
    lines = (sample_dir / "reviews.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):  # 3 files of 900 rows: the sample three times, ids made unique
        (inp / f"{i}.csv").write_text(lines[0] + "".join(f"{i}-{k}-{line}" for k in range(3) for line in lines[1:]),
                                      encoding="utf-8")
    local = local_rows(tiny_model, inp, tmp_path, chunk_size=25)
    node_c = cluster.cluster.add_node(num_cpus=2, memory=NODE_MEMORY, resources={"node_c": 1})
    out = tmp_path / "scored"
    outcome = {}

    def run():
        try:
            outcome["summary"] = score_with_ray(inp, out, model=tiny_model, config=ScoreConfig(chunk_size=25),
                                                options=RayOptions(num_workers=3))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".scored.sentiscore-*/.part-*")) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert thread.is_alive(), f"the run ended before any node was killed: {outcome}"
    cluster.cluster.remove_node(node_c)
    killed_during_run = thread.is_alive()
    cluster.cluster.add_node(num_cpus=2, memory=NODE_MEMORY, resources={"node_d": 1})
    thread.join(timeout=240)
    assert not thread.is_alive(), "the run hung after the node was killed"
    assert killed_during_run
    print(f"node C killed mid-run; the run {'failed: ' + repr(outcome['error']) if 'error' in outcome else 'completed'}")
    if "error" in outcome:
        error = outcome["error"]
        assert isinstance(error, WorkerError) and str(error).startswith("a Ray worker failed ("), repr(error)
        assert not out.exists()
    else:
        assert outcome["summary"].rows == local.num_rows == 3 * 900
        assert_same_rows(out, local)
