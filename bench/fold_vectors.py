"""Word vectors for each leave-one-source-out fold: the corpus vectors
continued (``sentiscore vectors train --init``) on the texts of the fold's
training rows, labels unused, never on the group left out; the ``dev`` fold
continues on the whole train split. bench/loso.py then uses them with
``--vectors OUT/labelled-{fold}``.

    python bench/fold_vectors.py --splits build/splits-all --init build/vectors/corpus-96 --out build/vectors

Each fold's texts are every training row of the split without that group,
not the 10,000 rows a ``--max-train-rows`` fold trains on: unlabelled text
of the training sources is what the shipped model's vectors see
(scripts/build_default_model.sh). Existing folders are kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import groups_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=Path, required=True, help="scripts/split_data.py's folder (train.parquet)")
    parser.add_argument("--init", required=True, help="the vectors to continue from")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/labelled-FOLD for every fold")
    parser.add_argument("--prefix", default="labelled-")
    args = parser.parse_args()

    train = pd.read_parquet(args.splits / "train.parquet", columns=["txt", "source"])
    groups = groups_of(train)
    folds = {"dev": train} | {g: train[groups != g] for g in sorted(groups.unique())}
    with tempfile.TemporaryDirectory() as tmp:
        for fold, rows in folds.items():
            target = args.out / f"{args.prefix}{fold}"
            if (target / "vectors.npy").is_file():
                print(f"{target} exists; kept", file=sys.stderr)
                continue
            texts = Path(tmp) / f"{fold}.parquet"
            rows[["txt"]].to_parquet(texts, index=False)
            print(f"{fold}: {len(rows):,} texts", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "sentiscore", "vectors", "train", str(texts), "--init", args.init,
                            "--out", str(target), "-q"], check=True)


if __name__ == "__main__":
    main()
