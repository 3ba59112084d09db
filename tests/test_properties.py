"""Property tests: whatever the text, every row comes out, in order, and the
same input gives the same output."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentiscore.config import ScoreConfig
from sentiscore.pipeline import score_file

# Control characters, lone surrogates, RTL marks, zero-width joiners, CJK, emoji.
texts = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(codec=None, categories=None), max_size=40),
    st.text(alphabet="好差不很太了的！？。 \u200b\u200d\u202e\ufeff\x00\x07😀🙂中评正负ABCabc123\n\t\r", max_size=30),
    st.sampled_from(["", "   ", "质量很好", "\ud800", "\u202e反转文字", "😀😀"]),
)


@pytest.fixture(scope="module")
def parallel_scorer(tiny_model):
    """Two worker processes, used even for a handful of texts."""
    from sentiscore.pipeline import Scorer

    scorer = Scorer.from_model(tiny_model, workers=2, batch_size=7)
    scorer.segmenter.min_parallel_texts = 1
    yield scorer
    scorer.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(texts, min_size=0, max_size=40), chunk_size=st.integers(min_value=1, max_value=17))
def test_any_text_keeps_rows_order_and_determinism(tiny_scorer, parallel_scorer, tmp_path_factory, rows, chunk_size):
    """One worker vs two, one chunk size vs another: the same rows, the same results."""
    folder = tmp_path_factory.mktemp("prop")
    # Lone surrogates cannot be stored as UTF-8: a file would carry them as U+FFFD.
    clean = [None if t is None else t.encode("utf-8", "replace").decode("utf-8") for t in rows]
    src = folder / "in.parquet"
    pq.write_table(pa.table({"id": list(range(len(clean))), "txt": pa.array(clean, pa.string())}), src)
    first = score_file(src, folder / "a.parquet", config=ScoreConfig(chunk_size=chunk_size), scorer=tiny_scorer)
    second = score_file(src, folder / "b.parquet", config=ScoreConfig(chunk_size=max(1, 40 - chunk_size)), scorer=parallel_scorer)
    a, b = pq.read_table(folder / "a.parquet"), pq.read_table(folder / "b.parquet")
    assert first.rows == second.rows == len(clean)
    assert a.column("id").to_pylist() == list(range(len(clean)))
    assert a.column("txt").to_pylist() == clean
    assert a.column("status").to_pylist() == b.column("status").to_pylist()
    assert a.column("label").to_pylist() == b.column("label").to_pylist()
    assert a.column("top_words").to_pylist() == b.column("top_words").to_pylist()
    np.testing.assert_allclose(a.column("confidence").to_numpy(zero_copy_only=False).astype(float),
                               b.column("confidence").to_numpy(zero_copy_only=False).astype(float), rtol=1e-4, equal_nan=True)
    labelled = [s in ("ok", "truncated") for s in a.column("status").to_pylist()]
    assert [v is not None for v in a.column("label").to_pylist()] == labelled


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.one_of(st.none(), st.text(max_size=25)), max_size=30))
def test_predict_never_raises(tiny_scorer, batch):
    frame = tiny_scorer.predict(batch + ["\ud800好"])  # lone surrogates included
    assert len(frame) == len(batch) + 1
    assert set(frame.status) <= {"ok", "truncated", "empty", "no_tokens"}
