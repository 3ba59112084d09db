"""ONNX Runtime as the scoring engine of the classifier (attention or
wide-deep; learned word embeddings, ELMo vectors, or both side by side): the
same computation as the Keras model, without importing TensorFlow at scoring
time. The biLM of ELMo models stays in torch; its vectors are an input here.

Keras 3 runs its LSTM as a generic while-loop, which exporters turn into an
ONNX ``Loop`` that ONNX Runtime runs at half TensorFlow's speed. So the graph
is built here from the trained weights, with ONNX's own ``LSTM`` operator
(bidirectional, per-row ``sequence_lens``): embedding lookup and/or ELMo
vectors (concatenated, ELMo first, as the Keras model does) → BiLSTM →
feed-forward attention → dense, plus the hashed n-gram path, the calibration
and the softmax. Outputs: probabilities, attention weights and each token's
share of the deep logits (its state through the dense kernel, times its
attention), as :class:`model.Predictor` returns them, and each path's logits.

The graph is built once per model (it needs the Keras model, so TensorFlow,
and the ``onnx`` package) into the cache, named by the model's hash, and
checked against Keras on a probe batch before it is kept. The weights that
scoring also reads in NumPy (the n-gram table for the cascade and top words,
and its idf weights) are saved beside it as ``.npz``, so
scoring needs ``onnxruntime`` only: importing ``onnx`` costs ~0.8 s of start-up.

``--runtime onnx-int8`` scores a second cached graph, the same one with its
BiLSTM's weights quantised to int8 (ONNX Runtime's dynamic quantisation:
``DynamicQuantizeLSTM``). The recurrence is most of the classifier's time;
attention, dense and n-gram weights stay float32. Its probabilities move by
up to about 1e-2, so it is a quantised path measured for quality (BENCHMARKS.md,
"Speed, 2026-12-02 (evening)"), not an exact one; and the activations' scale
is taken per call, over the whole batch, so a row's output depends slightly
on the rows batched with it. That is why ``auto`` stays float32."""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .config import ELMO_EMBEDDERS, EMBEDDER_TYPES, VOCAB_EMBEDDERS
from .errors import ModelError

GRAPH_VERSION = 5  # bump when the graph changes: cached graphs of other versions are rebuilt
OPSET = 18
# The IR version that came with opset 18 (onnx 1.13), not the newest the onnx package writes: ONNX
# Runtime refuses IR versions newer than its own (1.30 refused onnx 1.23's IR 14 on a GPU machine).
IR_VERSION = 8
SUPPORTED_EMBEDDERS = EMBEDDER_TYPES
_OUTPUTS = ("probs", "alpha", "token_logits")
_NUMPY_WEIGHTS = ("wide_table", "wide_bias", "wide_idf")  # read by scoring besides the graph


def available() -> bool:
    """onnxruntime (scoring) and onnx (building, reading the graph) are installed."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def supports(card) -> bool:
    """ELMo models that mix the biLM layers inside Keras (``--layer-mix
    scalar``: input ``elmo_layers``) stay on TensorFlow."""
    return card.embedder_type in SUPPORTED_EMBEDDERS and card.embedder.get("layer_mix") != "scalar"


def _uses(card) -> tuple[bool, bool]:
    """(ELMo vectors, token ids): the graph's token inputs."""
    return card.embedder_type in ELMO_EMBEDDERS, card.embedder_type in VOCAB_EMBEDDERS


INT8_RUNTIME = "onnx-int8"
INT8_OP_TYPES = ("LSTM",)  # what --runtime onnx-int8 quantises
INT8_PROBE_TOLERANCE = 0.05  # probe-batch probabilities of the int8 graph vs float32: a broken graph, not rounding


def graph_path(card, int8: bool = False) -> Path:
    from .segment import cache_dir

    return cache_dir("onnx") / f"{card.hash}-v{GRAPH_VERSION}{'-int8' if int8 else ''}.onnx"


def weights_path(graph: Path) -> Path:
    """The ``.npz`` beside a graph with its :data:`_NUMPY_WEIGHTS`."""
    return Path(f"{graph}.npz")


def _save_numpy_weights(model, graph: Path) -> None:
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in _NUMPY_WEIGHTS}
    with open(weights_path(graph), "wb") as f:  # a file object: np.savez would append .npz to a name
        np.savez(f, **arrays)


def _lstm_weights(layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Keras LSTM's kernel, recurrent kernel and bias in ONNX's layout:
    gates reordered from Keras' (i, f, c, o) to ONNX's (i, o, f, c), matrices
    transposed, the bias as [input bias, recurrent bias = 0]."""
    kernel, recurrent, bias = (np.asarray(w) for w in layer.cell.get_weights())
    units = recurrent.shape[0]
    order = np.concatenate([np.arange(units) + k * units for k in (0, 3, 1, 2)])
    return kernel[:, order].T, recurrent[:, order].T, np.concatenate([bias[order], np.zeros_like(bias)])


def build_graph(keras_model, card):
    """The ONNX model of a Keras classifier on word ids, ELMo vectors or both (see module doc)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .model import framework_versions

    names = {layer.name for layer in keras_model.layers}
    bilstm = keras_model.get_layer("bilstm")
    w_f, r_f, b_f = _lstm_weights(bilstm.forward_layer)
    w_b, r_b, b_b = _lstm_weights(bilstm.backward_layer)
    units = r_f.shape[1]
    attention_w, attention_b = (np.asarray(w) for w in keras_model.get_layer("attention").get_weights())
    dense_k, dense_b = (np.asarray(w) for w in keras_model.get_layer("deep_logits").get_weights())
    calibration = keras_model.get_layer("calibration").get_config() if "calibration" in names else {}
    temperature = float(calibration.get("temperature", 1.0))
    class_bias = np.asarray(calibration.get("bias") or np.zeros(dense_b.shape), np.float32)
    f32 = np.float32
    uses_elmo, uses_ids = _uses(card)
    inits = {
        "lstm_W": np.stack([w_f, w_b]).astype(f32), "lstm_R": np.stack([r_f, r_b]).astype(f32),
        "lstm_B": np.stack([b_f, b_b]).astype(f32),
        "att_w": attention_w.astype(f32), "att_b": attention_b.astype(f32),
        "dense_k": dense_k.astype(f32), "dense_b": dense_b.astype(f32),
        "inv_temperature": np.asarray(1.0 / temperature, f32), "class_bias": class_bias.astype(f32),
        "zero_i": np.asarray(0, np.int32),
        "neg_big": np.asarray(-1e9, f32), "tiny": np.asarray(1e-9, f32),
        "axis1": np.asarray([1], np.int64), "axis2": np.asarray([2], np.int64), "axis_last": np.asarray([-1], np.int64),
        "start0": np.asarray([0], np.int64), "perm_shape_idx": np.asarray([1], np.int64),
        "ybt_shape": np.asarray([0, 0, 2 * units], np.int64),
    }
    n = helper.make_node
    inputs, nodes, token_parts, masks = [], [], [], []
    # Tokens are padded on the right: with 0 ids, and with all-zero ELMo vectors
    # (a real one never is; Keras' Masking(0.0) reads them so). With both, a
    # step is real if either says so, as Keras' Concatenate merges the masks.
    if uses_ids:
        inits["embeddings"] = np.asarray(keras_model.get_layer("embedding").get_weights()[0], f32)
    if uses_elmo:  # the BiLSTM reads ELMo's dim plus the word embedding's
        inits["zero_f"] = np.asarray(0.0, f32)  # only where used: ONNX Runtime warns of unused initializers at every load
        elmo_dim = w_f.shape[1] - (inits["embeddings"].shape[1] if uses_ids else 0)
        inputs.append(helper.make_tensor_value_info("elmo_vectors", TensorProto.FLOAT, ["batch", "steps", elmo_dim]))
        nodes += [n("Abs", ["elmo_vectors"], ["elmo_abs"]),
                  n("ReduceMax", ["elmo_abs", "axis2"], ["elmo_max"], keepdims=0),
                  n("Greater", ["elmo_max", "zero_f"], ["elmo_mask"])]
        token_parts.append("elmo_vectors")
        masks.append("elmo_mask")
    if uses_ids:
        inputs.append(helper.make_tensor_value_info("token_ids", TensorProto.INT32, ["batch", "steps"]))
        nodes += [n("Greater", ["token_ids", "zero_i"], ["ids_mask"]),
                  n("Gather", ["embeddings", "token_ids"], ["words"])]  # (B, T, D)
        token_parts.append("words")
        masks.append("ids_mask")
    nodes += [n("Or", masks, ["mask"]) if len(masks) > 1 else n("Identity", masks, ["mask"]),
              n("Concat", token_parts, ["embedded"], axis=2) if len(token_parts) > 1 else n("Identity", token_parts, ["embedded"])]
    nodes += [
        n("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
        n("ReduceSum", ["mask_f", "axis1"], ["lengths_f"], keepdims=0),
        n("Cast", ["lengths_f"], ["lengths"], to=TensorProto.INT32),
        n("Transpose", ["embedded"], ["x_tbd"], perm=[1, 0, 2]),
        n("LSTM", ["x_tbd", "lstm_W", "lstm_R", "lstm_B", "lengths"], ["y"], hidden_size=units, direction="bidirectional"),
        # y: (T, 2, B, H) → (B, T, 2, H) → (B, T, 2H), forward states first as Keras concatenates them.
        n("Transpose", ["y"], ["y_btdh"], perm=[2, 0, 1, 3]),
        n("Reshape", ["y_btdh", "ybt_shape"], ["states"]),
        # Attention: e = tanh(h·w + b[:T]), softmax over real tokens only.
        n("MatMul", ["states", "att_w"], ["scores3"]),
        n("Squeeze", ["scores3", "axis_last"], ["scores_raw"]),
        n("Shape", ["mask"], ["ids_shape"]),
        n("Gather", ["ids_shape", "perm_shape_idx"], ["steps"]),
        n("Slice", ["att_b", "start0", "steps"], ["att_b_t"]),
        n("Add", ["scores_raw", "att_b_t"], ["scores_b"]),
        n("Tanh", ["scores_b"], ["scores_t"]),
        n("Where", ["mask", "scores_t", "neg_big"], ["scores_m"]),
        n("ReduceMax", ["scores_m", "axis1"], ["scores_max"], keepdims=1),
        n("Sub", ["scores_m", "scores_max"], ["scores_s"]),
        n("Exp", ["scores_s"], ["scores_e"]),
        n("Mul", ["scores_e", "mask_f"], ["weights"]),
        n("ReduceSum", ["weights", "axis1"], ["weights_sum"], keepdims=1),
        n("Max", ["weights_sum", "tiny"], ["weights_den"]),
        n("Div", ["weights", "weights_den"], ["alpha"]),
        n("Unsqueeze", ["alpha", "axis2"], ["alpha3"]),
        n("Mul", ["states", "alpha3"], ["weighted"]),
        n("ReduceSum", ["weighted", "axis1"], ["context"], keepdims=0),
        n("MatMul", ["context", "dense_k"], ["deep_k"]),
        n("Add", ["deep_k", "dense_b"], ["deep_logits"]),
        # Each token's share of the deep logits (the context is Σ alpha_t h_t).
        n("MatMul", ["states", "dense_k"], ["state_logits"]),
        n("Mul", ["state_logits", "alpha3"], ["token_logits"]),
    ]
    logits = "deep_logits"
    if card.arch == "wide-deep":
        table, bias, *idf = (np.asarray(w, f32) for w in keras_model.get_layer("wide_logits").get_weights())
        inits.update({"wide_table": table, "wide_bias": bias})
        inputs.append(helper.make_tensor_value_info("ngram_ids", TensorProto.INT32, ["batch", "ngrams"]))
        nodes += [
            n("Greater", ["ngram_ids", "zero_i"], ["ngram_keep"]),
            n("Cast", ["ngram_keep"], ["ngram_keep_f"], to=TensorProto.FLOAT),
            n("Gather", ["wide_table", "ngram_ids"], ["ngram_rows"]),  # (B, N, C); row 0 is masked below
            n("Unsqueeze", ["ngram_keep_f", "axis2"], ["ngram_keep3"]),
            n("Mul", ["ngram_rows", "ngram_keep3"], ["ngram_kept"]),
            n("ReduceSum", ["ngram_kept", "axis1"], ["ngram_sum"], keepdims=0),
        ]
        if idf:  # idf weighting: over the L2 norm of the row's idf weights (HashedNgramLinear)
            inits.update({"wide_idf": idf[0], "norm_floor": np.array(1e-6, f32)})
            nodes += [
                n("Gather", ["wide_idf", "ngram_ids"], ["ngram_idf"]),
                n("Mul", ["ngram_idf", "ngram_keep_f"], ["ngram_weight"]),
                n("Mul", ["ngram_weight", "ngram_weight"], ["ngram_weight2"]),
                n("ReduceSum", ["ngram_weight2", "axis1"], ["ngram_ss"], keepdims=1),
                n("Sqrt", ["ngram_ss"], ["ngram_l2"]),
                n("Max", ["ngram_l2", "norm_floor"], ["ngram_norm"]),
            ]
        else:
            inits["one_f"] = np.asarray(1.0, f32)
            nodes += [
                n("ReduceSum", ["ngram_keep_f", "axis1"], ["ngram_count"], keepdims=1),
                n("Max", ["ngram_count", "one_f"], ["ngram_count1"]),
                n("Sqrt", ["ngram_count1"], ["ngram_norm"]),
            ]
        nodes += [
            n("Div", ["ngram_sum", "ngram_norm"], ["ngram_scaled"]),
            n("Add", ["ngram_scaled", "wide_bias"], ["wide_logits"]),
            n("Add", ["deep_logits", "wide_logits"], ["wide_deep_logits"]),
        ]
        logits = "wide_deep_logits"
    nodes += [
        n("Mul", [logits, "inv_temperature"], ["scaled"]),
        n("Add", ["scaled", "class_bias"], ["calibrated"]),
        n("Softmax", ["calibrated"], ["probs"], axis=-1),
    ]
    classes = int(dense_b.shape[0])
    shapes = {"probs": ["batch", classes], "alpha": ["batch", "steps"], "token_logits": ["batch", "steps", classes],
              "deep_logits": ["batch", classes], "wide_logits": ["batch", classes]}
    parts = ["deep_logits"] + (["wide_logits"] if card.arch == "wide-deep" else [])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes[name]) for name in (*_OUTPUTS, *parts)]
    graph = helper.make_graph(nodes, "sentiscore_classifier", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sentiscore", ir_version=IR_VERSION)
    model.metadata_props.append(onnx.StringStringEntryProto(key="sentiscore", value=json.dumps(
        {"model_hash": card.hash, "graph_version": GRAPH_VERSION, "temperature": temperature,
         "built_from": framework_versions()})))
    onnx.checker.check_model(model)
    return model


class OnnxPredictor:
    """:class:`model.Predictor`'s interface on ONNX Runtime: probabilities,
    attention and each token's share of the deep logits, per padded batch."""

    def __init__(self, path: Path, batch_size: int, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Batches vary in shape (rows × padded tokens): ORT's arena would keep the
        # largest buffers it ever needed and its memory patterns one plan per
        # shape, so peak RSS would grow with the file; plain allocations do not.
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_dtypes = {i.name: np.float32 if i.type == "tensor(float)" else np.int32 for i in self._session.get_inputs()}
        self.input_widths = {i.name: i.shape[2] for i in self._session.get_inputs() if len(i.shape) == 3}  # ELMo's dim
        meta = json.loads(self._session.get_modelmeta().custom_metadata_map["sentiscore"])
        self.temperature = float(meta["temperature"])
        self.versions = dict(meta["built_from"])  # the TensorFlow and Keras that built the graph, for provenance
        with np.load(weights_path(path), allow_pickle=False) as weights:
            self.wide_table = weights["wide_table"] if "wide_table" in weights else None
            self.wide_bias = weights["wide_bias"] if "wide_bias" in weights else None
            self.wide_idf = weights["wide_idf"] if "wide_idf" in weights else None
        self.batch_size = batch_size
        self.precision = meta.get("precision", "float32")
        self.runtime = f"onnxruntime {ort.__version__}" + (" int8" if self.precision == "int8" else "")

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(inputs[name], dtype) for name, dtype in self._input_dtypes.items()}

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feed = self._feed(inputs)
        probs, alpha, token_logits = self._session.run(list(_OUTPUTS), feed)
        return probs, alpha, token_logits

    def logit_parts(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each path's logits before calibration (``deep``, and ``wide`` for wide-deep models)."""
        feed = self._feed(inputs)
        names = [o.name for o in self._session.get_outputs() if o.name.endswith("_logits") and o.name not in _OUTPUTS]
        return {name.split("_")[0]: out for name, out in zip(names, self._session.run(names, feed))}


def graph_for(card, runtime: str, log=None) -> Path | None:
    """The ONNX graph to score this model with, or None for TensorFlow.
    ``auto`` falls back to TensorFlow, saying why, where ``onnx`` is an error."""
    from .errors import UsageError

    if runtime == "tensorflow":
        return None
    int8 = runtime == INT8_RUNTIME
    reason = None
    if not supports(card):
        reason = (f"its embedder ({card.embedder_type}) runs on TensorFlow only" if card.embedder_type not in SUPPORTED_EMBEDDERS
                  else "its ELMo layer mix is learned in Keras (--layer-mix scalar), which runs on TensorFlow only")
    elif not available():
        reason = "onnxruntime and onnx are not installed (pip install onnxruntime onnx)"
    if reason is None:
        try:
            return ensure_int8_graph(card, log) if int8 else ensure_graph(card, log)
        except ModelError as exc:
            reason = str(exc)
    if runtime != "auto":
        raise UsageError(f"--runtime {runtime}: model {card.name}: {reason}")
    if log is not None and supports(card):
        log(f"sentiscore: scoring {card.name} with TensorFlow: {reason}")
    return None


def ensure_graph(card, log=None) -> Path:
    """The cached graph of this model, built and checked against Keras the
    first time (TensorFlow is imported only then)."""
    path = graph_path(card)
    if path.is_file() and weights_path(path).is_file():
        return path
    import onnx

    from .artifacts import load_model
    from .model import Predictor

    if log is not None:
        log(f"sentiscore: building the ONNX graph of {card.name} (once; cached in {path.parent})")
    loaded = load_model(card)
    try:
        model = build_graph(loaded.keras_model, card)
    except Exception as exc:  # a layer this builder does not know: Keras and onnx raise many types
        raise ModelError(f"could not build the ONNX graph of {card.name} ({type(exc).__name__}: {exc})") from exc
    with _publishing(path) as tmp:
        onnx.save(model, str(tmp))
        _save_numpy_weights(model, tmp)
        _check_against_keras(Predictor(loaded.keras_model), OnnxPredictor(tmp, batch_size=64), card)
    return path


@contextmanager
def _publishing(path: Path):
    """A temp graph path beside ``path`` to write and check a graph and its
    weights at; when the block ends without error both are renamed into place
    (the weights first: a graph on disk means both are there). Either way no
    temp file is left."""
    tmp = path.with_suffix(f".tmp-{np.random.default_rng().integers(1 << 30)}")
    try:
        yield tmp
        weights_path(tmp).replace(weights_path(path))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        weights_path(tmp).unlink(missing_ok=True)


def ensure_int8_graph(card, log=None) -> Path:
    """The cached int8 graph of this model (see module doc), quantised from
    the float32 one the first time and checked against it on a probe batch."""
    path = graph_path(card, int8=True)
    if path.is_file() and weights_path(path).is_file():
        return path
    source = ensure_graph(card, log)
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if log is not None:
        log(f"sentiscore: quantising the BiLSTM of {card.name} to int8 (once; cached in {path.parent})")
    with _publishing(path) as tmp:
        # The quantiser advises pre-processing (meant for vision models) through the root logger.
        muted = logging.root.manager.disable
        logging.disable(max(muted, logging.WARNING))
        try:
            quantize_dynamic(source, tmp, op_types_to_quantize=list(INT8_OP_TYPES), weight_type=QuantType.QInt8)
        finally:
            logging.disable(muted)
        model = onnx.load(str(tmp))
        for prop in model.metadata_props:  # the predictor reports the precision it runs at
            if prop.key == "sentiscore":
                prop.value = json.dumps({**json.loads(prop.value), "precision": "int8"})
        onnx.save(model, str(tmp))
        shutil.copyfile(weights_path(source), weights_path(tmp))  # quantisation leaves these float32
        exact, quantised = OnnxPredictor(source, batch_size=64), OnnxPredictor(tmp, batch_size=64)
        inputs = _probe_inputs(card, exact.input_widths)
        gap = float(np.abs(exact(inputs)[0] - quantised(inputs)[0]).max())
        if not gap <= INT8_PROBE_TOLERANCE:
            raise ModelError(f"the int8 graph of {card.name} differs from float32 by {gap:.3f} in probability on a probe batch; "
                             "score with --runtime onnx")
    return path


def _probe_inputs(card, input_widths: dict) -> dict[str, np.ndarray]:
    """Random token and n-gram ids (and ELMo vectors) of mixed lengths."""
    rng = np.random.default_rng(0)
    vocab = int(card.embedder.get("vocab_size") or 1000)
    rows, width = 32, 24
    lengths = rng.integers(1, width + 1, rows)
    padding = np.arange(width)[None, :] >= lengths[:, None]
    uses_elmo, uses_ids = _uses(card)
    inputs = {"mask": ~padding}
    if uses_ids:
        inputs["token_ids"] = np.where(padding, 0, rng.integers(2, max(3, vocab), (rows, width))).astype(np.int32)
    if uses_elmo:
        vectors = rng.normal(size=(rows, width, input_widths["elmo_vectors"])).astype(np.float32)
        inputs["elmo_vectors"] = np.where(padding[..., None], 0.0, vectors).astype(np.float32)
    if card.wide is not None:
        ngrams = rng.integers(1, card.wide.num_buckets, (rows, 40)).astype(np.int32)
        ngrams[np.arange(40)[None, :] >= (lengths[:, None] * 2)] = 0
        inputs["ngram_ids"] = ngrams
    return inputs


def _check_against_keras(keras_predictor, onnx_predictor, card) -> None:
    """The probe batch through both engines."""
    inputs = _probe_inputs(card, onnx_predictor.input_widths)
    expected = keras_predictor(inputs)
    got = onnx_predictor(inputs)
    for name, a, b in zip(("probabilities", "attention", "token logits"), expected, got):
        if not np.allclose(a, b, atol=1e-4):
            raise ModelError(f"the ONNX graph of {card.name} differs from Keras on {name} "
                             f"(max difference {np.abs(a - b).max():.2e}); score with --runtime tensorflow")
