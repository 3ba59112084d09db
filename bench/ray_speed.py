"""Local Ray vs the single-process engine: ``sentiscore score`` end to end.

    python bench/ray_speed.py --model zh-fast --rows 100000 \
        [--source build/splits/train.parquet | ../shared/data/sentiment_train.tsv] [--num-workers N]

Resamples the source texts with replacement (fixed seed) into
build/bench/ray-input-N.parquet (id, txt, source; never committed), then runs,
one after the other, as subprocesses:

    python -m sentiscore score IN OUT.parquet --quiet --overwrite                 (local engine)
    python -m sentiscore score IN OUT_DIR --engine ray --quiet --overwrite        (a local Ray started by the command)

Wall seconds cover the whole command: interpreter start, Ray start-up (the
ray run), TensorFlow import and model load. Peak RSS is polled every 0.1 s
for the driver (the command's own process) and summed over its process tree
(local: the segmentation workers; Ray: GCS, raylet, task workers and the
scoring actors, all started by the driver's ray.init). Both outputs are
checked to hold every row with the same labels.

Needs psutil and ray (``pip install psutil 'sentiscore[ray]'``). Prints a
markdown table on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import _version, machine_lines, make_input, run_measured  # noqa: E402


def parquet_source(source: Path, out_dir: Path) -> Path:
    """A TSV/CSV source (e.g. ../shared/data/sentiment_train.tsv) as Parquet."""
    if source.suffix == ".parquet":
        return source
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(source, parse_options=pacsv.ParseOptions(delimiter="\t" if source.suffix == ".tsv" else ",",
                                                                    newlines_in_values=True),
                           convert_options=pacsv.ConvertOptions(column_types={"txt": "string", "source": "string"}))
    out = out_dir / f"source-{source.stem}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.select(["txt", "source"]), out)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="zh-fast", help="Model directory or built-in name.")
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000], help="Row counts to benchmark.")
    parser.add_argument("--source", type=Path, default=Path("build/splits/train.parquet"),
                        help="Parquet (or TSV/CSV) file with txt and source columns.")
    parser.add_argument("--num-workers", type=int, default=None, help="Passed to --num-workers of the ray run (default: its own).")
    parser.add_argument("--out-dir", type=Path, default=Path("build/bench"), help="Where inputs and outputs are written.")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)

    source = parquet_source(args.source, args.out_dir)
    results = []
    for rows in args.rows:
        inp = make_input(source, rows, args.out_dir / f"ray-input-{rows}.parquet", args.seed)
        runs = {
            "local": ([], args.out_dir / f"ray-bench-local-{rows}.parquet"),
            "ray": (["--engine", "ray"] + (["--num-workers", str(args.num_workers)] if args.num_workers else []),
                    args.out_dir / f"ray-bench-ray-{rows}"),
        }
        labels = {}
        for engine, (extra, out) in runs.items():
            cmd = [sys.executable, "-m", "sentiscore", "score", str(inp), str(out), "--model", args.model,
                   "--quiet", "--overwrite", *extra]
            print(f"running: {' '.join(cmd)}", file=sys.stderr, flush=True)
            measured = run_measured(cmd)
            table = pq.read_table(out, columns=["id", "label"]).sort_by("id")
            if table.num_rows != rows:
                raise SystemExit(f"{out} has {table.num_rows} rows, expected {rows}")
            labels[engine] = table.column("label").to_pylist()
            results.append({"engine": engine, "rows": rows, **measured})
        differ = sum(a != b for a, b in zip(labels["local"], labels["ray"]))
        if differ:
            raise SystemExit(f"{differ} of {rows} rows got another label from the ray engine")

    print(f"sentiscore score, model {args.model}, source {args.source}; labels identical between engines\n")
    print("| engine | rows | seconds | rows/s | peak RSS driver (MB) | peak RSS all processes (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        engine = "local (default --workers)" if r["engine"] == "local" else (
            f"ray, local cluster ({'--num-workers ' + str(args.num_workers) if args.num_workers else 'default --num-workers'})")
        print(f"| {engine} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | "
              f"{r['peak_rss_main_mb']:,.0f} | {r['peak_rss_tree_mb']:,.0f} |")
    print()
    print("\n".join(machine_lines()))
    print(f"- ray {_version('ray')}, pyarrow {_version('pyarrow')}")


if __name__ == "__main__":
    main()
