"""The ONNX Runtime path: the graph built from the Keras weights computes
what Keras computes; ``--runtime`` picks it, or falls back, as documented."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from sentiscore import onnx_engine
from sentiscore.artifacts import load_model, read_card
from sentiscore.config import ScoreConfig
from sentiscore.errors import ModelError, UsageError
from sentiscore.model import Predictor
from sentiscore.pipeline import Scorer, score_file


def _score(model, src, out, runtime, **config):
    score_file(src, out, model=model, config=ScoreConfig(runtime=runtime, workers=1, **config))
    return pq.read_table(out)


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_idf_model", "tiny_attention_model", "tiny_elmo_average_model",
                                     "tiny_elmo_vocab_model"])
def test_both_runtimes_give_the_same_output(fixture, request, sample_dir, tmp_path):
    model = request.getfixturevalue(fixture)
    onnx_out = _score(model, sample_dir / "reviews.csv", tmp_path / "onnx.parquet", "onnx", cascade=False)
    tf_out = _score(model, sample_dir / "reviews.csv", tmp_path / "tf.parquet", "tensorflow", cascade=False)
    a, b = onnx_out.to_pandas(), tf_out.to_pandas()
    assert a.label.tolist() == b.label.tolist() and a.status.tolist() == b.status.tolist()
    probs = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(a[probs].to_numpy(float), b[probs].to_numpy(float), atol=1e-5)
    assert [list(x) for x in a.top_words] == [list(x) for x in b.top_words]
    np.testing.assert_allclose(np.concatenate([np.asarray(x, float) for x in a.top_weights]),
                               np.concatenate([np.asarray(x, float) for x in b.top_weights]), atol=1e-4)
    runtime = onnx_out.schema.metadata[b"sentiscore.runtime"].decode()
    assert runtime.startswith("onnxruntime ") and tf_out.schema.metadata[b"sentiscore.runtime"].decode().startswith("tensorflow ")


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_idf_model"])
def test_graph_outputs_and_path_logits_equal_keras_on_real_batches(fixture, request):
    card = read_card(request.getfixturevalue(fixture))
    graph = onnx_engine.ensure_graph(card)
    keras_predictor = Predictor(load_model(card).keras_model)
    onnx_predictor = onnx_engine.OnnxPredictor(graph, batch_size=16)
    texts = ["这个手机的屏幕很清晰，电池也耐用", "物流太慢了，客服态度也差，不会再买", "还行吧", "好"]
    with Scorer.from_card(card, workers=1, cascade=False, runtime="tensorflow") as scorer:
        prepared = scorer.preprocess(texts)
        segmented = prepared.segmentation()
        features = scorer.embedder.featurize(segmented)
        rows = np.arange(len(texts))
        inputs = scorer.embedder.encode(features, rows, int(segmented.lengths.max()))
        inputs["ngram_ids"] = scorer.hasher.transform(texts)
    for expected, got in zip(keras_predictor(inputs), onnx_predictor(inputs)):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    keras_parts, onnx_parts = keras_predictor.logit_parts(inputs), onnx_predictor.logit_parts(inputs)
    assert set(onnx_parts) == set(keras_parts) == {"deep", "wide"}
    for path in keras_parts:
        np.testing.assert_allclose(onnx_parts[path], keras_parts[path], atol=1e-5)
    assert onnx_predictor.temperature == pytest.approx(keras_predictor.temperature)
    options = onnx_predictor._session.get_session_options()  # no arena or per-shape plans kept (peak RSS, README)
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    np.testing.assert_array_equal(onnx_predictor.wide_table, keras_predictor.wide_table)
    if card.wide.weighting == "idf":
        np.testing.assert_array_equal(onnx_predictor.wide_idf, keras_predictor.wide_idf)
    else:
        assert onnx_predictor.wide_idf is None and keras_predictor.wide_idf is None


def test_the_graph_is_built_once_and_cached_by_model_hash(tiny_model):
    card = read_card(tiny_model)
    first = onnx_engine.ensure_graph(card)
    stamp = first.stat().st_mtime_ns
    assert onnx_engine.ensure_graph(card) == first and first.stat().st_mtime_ns == stamp
    assert card.hash in first.name


def test_the_graph_declares_its_opsets_ir_version_so_older_onnx_runtimes_load_it(tiny_model):
    import onnx

    graph = onnx.load(onnx_engine.ensure_graph(read_card(tiny_model)), load_external_data=False)
    assert graph.ir_version == onnx_engine.IR_VERSION < onnx.IR_VERSION
    assert [(o.domain, o.version) for o in graph.opset_import] == [("", onnx_engine.OPSET)]


def test_a_graph_that_disagrees_with_keras_is_never_kept(tiny_model, tmp_path, monkeypatch):
    """Keras' LSTM gates are (i, f, c, o), ONNX's (i, o, f, c): without the
    reordering the check against Keras must fail, and nothing is cached."""
    monkeypatch.setenv("SENTISCORE_CACHE_DIR", str(tmp_path / "cache"))
    card = read_card(tiny_model)

    def unordered(layer):
        kernel, recurrent, bias = (np.asarray(w) for w in layer.cell.get_weights())
        return kernel.T, recurrent.T, np.concatenate([bias, np.zeros_like(bias)])

    monkeypatch.setattr(onnx_engine, "_lstm_weights", unordered)
    with pytest.raises(ModelError, match="differs from Keras"):
        onnx_engine.ensure_graph(card)
    assert not onnx_engine.graph_path(card).exists()
    with pytest.raises(UsageError, match="--runtime onnx"):
        onnx_engine.graph_for(card, "onnx")
    said = []
    assert onnx_engine.graph_for(card, "auto", log=said.append) is None
    assert "scoring tiny with TensorFlow" in said[-1] and "differs from Keras" in said[-1]


def test_runtime_choice(tiny_model, tiny_elmo_model, tiny_elmo_vocab_model):
    fast, scalar_mix, elmo_vocab = read_card(tiny_model), read_card(tiny_elmo_model), read_card(tiny_elmo_vocab_model)
    assert onnx_engine.graph_for(fast, "tensorflow") is None
    assert onnx_engine.graph_for(fast, "auto") == onnx_engine.graph_path(fast)
    assert onnx_engine.graph_for(elmo_vocab, "auto") == onnx_engine.graph_path(elmo_vocab)  # the biLM in torch, the rest in ONNX
    assert onnx_engine.graph_for(scalar_mix, "auto") is None  # a layer mix learned in Keras stays on TensorFlow
    with pytest.raises(UsageError, match="layer mix is learned in Keras"):
        onnx_engine.graph_for(scalar_mix, "onnx")
    with pytest.raises(UsageError, match="--runtime"):
        ScoreConfig(runtime="jax")


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_elmo_vocab_model"])
def test_scoring_from_a_cached_graph_imports_neither_onnx_nor_tensorflow(fixture, request, sample_dir, tmp_path):
    """Once the graph is cached, scoring needs onnxruntime alone (and torch
    for an ELMo model's biLM): ``onnx`` (its ml_dtypes import costs ~0.8 s)
    and TensorFlow (~580 MiB) stay out of the process."""
    import subprocess
    import sys

    tiny_model = request.getfixturevalue(fixture)
    graph = onnx_engine.ensure_graph(read_card(tiny_model))
    assert onnx_engine.weights_path(graph).is_file()
    code = ("import sys; from sentiscore.config import ScoreConfig; from sentiscore.pipeline import score_file; "
            f"score_file({str(sample_dir / 'reviews.csv')!r}, {str(tmp_path / 'out.parquet')!r}, model={str(tiny_model)!r}, "
            "config=ScoreConfig(runtime='onnx', workers=1)); "
            "loaded = {'onnx', 'tensorflow', 'keras'} & set(sys.modules); assert not loaded, loaded")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "onnxruntime" not in run.stderr, run.stderr  # e.g. its warning about an unused initializer, at every load
    assert pq.read_table(tmp_path / "out.parquet").schema.metadata[b"sentiscore.runtime"].startswith(b"onnxruntime ")


@pytest.mark.parametrize("fixture", ["tiny_idf_model", "tiny_elmo_vocab_model"])
def test_int8_runtime_quantises_the_bilstm_alone_and_stays_close_to_float32(fixture, request, sample_dir, tmp_path):
    """--runtime onnx-int8: a second cached graph whose LSTM is ONNX
    Runtime's DynamicQuantizeLSTM (int8 weights) and nothing else changed;
    its output says so, and stays near the float32 graph's."""
    import onnx

    model = request.getfixturevalue(fixture)
    card = read_card(model)
    int8_graph = onnx_engine.graph_for(card, "onnx-int8")
    assert int8_graph == onnx_engine.graph_path(card, int8=True) != onnx_engine.graph_path(card)
    ops = {node.op_type for node in onnx.load(str(int8_graph)).graph.node}
    float_ops = {node.op_type for node in onnx.load(str(onnx_engine.graph_path(card))).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
    assert ops - float_ops <= {"DynamicQuantizeLSTM"}  # attention, dense and the n-gram path stay float32
    int8_out = _score(model, sample_dir / "reviews.csv", tmp_path / "int8.parquet", "onnx-int8", cascade=False)
    float_out = _score(model, sample_dir / "reviews.csv", tmp_path / "f32.parquet", "onnx", cascade=False)
    assert int8_out.schema.metadata[b"sentiscore.runtime"].endswith(b" int8")
    assert not float_out.schema.metadata[b"sentiscore.runtime"].endswith(b" int8")
    a, b = int8_out.to_pandas(), float_out.to_pandas()
    probs = [c for c in a.columns if c.startswith("prob_")]
    gap = np.abs(a[probs].to_numpy(float) - b[probs].to_numpy(float))
    assert gap.max() < 0.05 and 0 < gap.max()  # rounded, so not identical; close, so not broken
    assert (a.label == b.label).mean() >= 0.98
    assert onnx_engine.weights_path(int8_graph).is_file()


def test_an_int8_graph_that_strays_from_float32_is_never_kept(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SENTISCORE_CACHE_DIR", str(tmp_path / "cache"))
    card = read_card(tiny_model)
    monkeypatch.setattr(onnx_engine, "INT8_PROBE_TOLERANCE", -1.0)  # any difference at all fails the check
    with pytest.raises(UsageError, match="--runtime onnx-int8: .*differs from float32"):
        onnx_engine.graph_for(card, "onnx-int8")
    assert not onnx_engine.graph_path(card, int8=True).exists()
    assert onnx_engine.graph_path(card).exists()  # the float32 graph it came from is kept
    said = []
    assert onnx_engine.graph_for(card, "auto", log=said.append) == onnx_engine.graph_path(card)


def test_auto_stays_on_the_exact_float32_graph_whose_rows_do_not_depend_on_their_batch(tiny_idf_model, sample_dir, tmp_path):
    """int8 activations are scaled per batch, so a row's int8 output moves with
    the rows batched beside it; float32's does not, which is why auto keeps it."""
    card = read_card(tiny_idf_model)
    assert onnx_engine.graph_for(card, "auto") == onnx_engine.graph_path(card)
    src = sample_dir / "reviews.csv"

    def probs(runtime, chunk_size):
        out = _score(tiny_idf_model, src, tmp_path / f"{runtime}-{chunk_size}.parquet", runtime, cascade=False,
                     chunk_size=chunk_size).to_pandas()
        return out[[c for c in out.columns if c.startswith("prob_")]].to_numpy(float)

    np.testing.assert_allclose(probs("auto", 7), probs("auto", 10_000), atol=1e-6)
    assert np.nanmax(np.abs(probs("onnx-int8", 7) - probs("onnx-int8", 10_000))) > 1e-6
