# Inputs with a wide vocabulary for zh-elmo's memory (BENCHMARKS.md, "Memory, 2026-12-05 (later)"): rows drawn with
# replacement, as bench/speed.py draws them, from the 621k unlabelled corpus texts and the training split together
# (759,344 distinct texts; bench/speed.py's own inputs draw from the training split's 138k).
# python make_diverse_input.py   (from the repository root; writes build/bench-diverse/input-{10000,100000,1000000}.parquet)
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, "bench")
from speed import make_input  # noqa: E402

schema = pa.schema([("txt", pa.large_string()), ("source", pa.large_string())])
corpus = pq.read_table("../shared/data/corpus/corpus.parquet", columns=["txt", "source"]).cast(schema)
train = pq.read_table("build/splits-all/train.parquet", columns=["txt", "source"]).cast(schema)
Path("build/bench-diverse").mkdir(parents=True, exist_ok=True)
pq.write_table(pa.concat_tables([corpus, train]), "build/bench-diverse/source.parquet")
for rows in (10_000, 100_000, 1_000_000):
    make_input(Path("build/bench-diverse/source.parquet"), rows, Path(f"build/bench-diverse/input-{rows}.parquet"), 13)
