"""The ELMo embedder and its pretraining loop (embed/elmo.py, embed/elmo_pretrain.py)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("elmoformanylangs")

from sentiscore.embed.elmo import BatchTensors, ElmoEmbedder, TokenVectorCache, cached_features, read_lexicon, read_network_config, resolve_device  # noqa: E402
from sentiscore.errors import UsageError  # noqa: E402

from .conftest import SAMPLE, tiny_elmo_config  # noqa: E402

SENTENCES = [["这", "手机", "很", "好"], ["不", "喜欢"], ["物流", "太", "慢", "了", "但是", "东西", "还", "可以", "用"]]


def test_pretrained_folder_loads_in_elmoformanylangs_unchanged(tiny_elmo):
    from elmoformanylangs import Embedder

    for name in ("config.json", "network.json", "char.dic", "word.dic", "token_embedder.pkl", "encoder.pkl", "sentiscore_elmo.json"):
        assert (tiny_elmo / name).is_file(), name
    reference = Embedder(str(tiny_elmo), batch_size=8).sents2elmo(SENTENCES)  # average of layers, like the prototype
    ours = ElmoEmbedder(tiny_elmo, layer_mix="average", device="cpu")
    flat = ours.embed(SENTENCES)
    start = 0
    for sentence, expected in zip(SENTENCES, reference):
        assert expected.shape == (len(sentence), ours.dim)
        np.testing.assert_allclose(flat[start : start + len(sentence)], expected, atol=1e-5)
        start += len(sentence)


def test_card_records_corpus_and_perplexity(tiny_elmo):
    card = json.loads((tiny_elmo / "sentiscore_elmo.json").read_text(encoding="utf-8"))
    assert card["corpus"][0]["sentences"] == 200
    assert len(card["history"]) == 1 and np.isfinite(card["history"][0]["train_perplexity"])
    assert card["output_dim"] == 16 and card["layers"] == 3


def test_batch_tensors_match_elmoformanylangs(tiny_elmo):
    import torch
    from elmoformanylangs.frontend import create_one_batch

    network = read_network_config(tiny_elmo)
    words, chars = read_lexicon(tiny_elmo / "word.dic"), read_lexicon(tiny_elmo / "char.dic")
    ours = BatchTensors(network, words, chars).build(SENTENCES + [["超长的一个词语" * 4]])
    keep = network["token_embedder"]["max_characters_per_token"] - 2  # the package cuts long words when reading
    with_markers = [["<bos>", *s, "<eos>"] for s in SENTENCES + [[("超长的一个词语" * 4)[:keep]]]]
    w, c, _lens, masks = create_one_batch(with_markers, words, chars, network, sort=False)
    np.testing.assert_array_equal(ours[0], w.numpy())
    np.testing.assert_array_equal(ours[1], c.numpy())
    np.testing.assert_array_equal(ours[2], masks[0].numpy())
    np.testing.assert_array_equal(ours[3], masks[1].numpy())
    np.testing.assert_array_equal(ours[4], masks[2].numpy())
    assert isinstance(masks[1], torch.Tensor)


def test_vectors_do_not_depend_on_batch_mates_or_earlier_batches(tiny_elmo):
    embedder = ElmoEmbedder(tiny_elmo, layer_mix="scalar", device="cpu", batch_size=2)
    alone = embedder.embed([SENTENCES[1]])
    embedder.embed([SENTENCES[2], SENTENCES[0]])  # leaves state behind in a stateful biLM
    batched = embedder.embed([SENTENCES[2], SENTENCES[1], SENTENCES[0]])
    assert alone.shape == (2, 3, embedder.dim)
    np.testing.assert_allclose(batched[9:11], alone, atol=1e-5)


def test_texts_without_tokens_contribute_nothing(tiny_elmo):
    embedder = ElmoEmbedder(tiny_elmo, device="cpu")
    out = embedder.embed([[], SENTENCES[1], []])
    assert out.shape == (2, embedder.dim)
    np.testing.assert_allclose(out, embedder.embed([SENTENCES[1]]), atol=1e-6)


def test_feature_cache_hit_and_miss(tiny_elmo, tmp_path, monkeypatch):
    from sentiscore.segment import SegmentedBatch

    batch = SegmentedBatch([t for s in SENTENCES for t in s], np.array([len(s) for s in SENTENCES], np.int32),
                           np.zeros(3, bool))
    embedder = ElmoEmbedder(tiny_elmo, device="cpu")
    messages = []
    first = cached_features(embedder, batch, messages.append, cache_root=tmp_path)
    assert "computing" in messages[-1] and len(list(tmp_path.glob("*.npy"))) == 1
    monkeypatch.setattr(embedder, "embed", lambda *a, **k: pytest.fail("a cache hit must not run the biLM"))
    second = cached_features(embedder, batch, messages.append, cache_root=tmp_path)
    assert "cache hit" in messages[-1]
    np.testing.assert_array_equal(np.asarray(first.vectors), np.asarray(second.vectors))
    assert second.vectors.dtype == np.float16
    other = ElmoEmbedder(tiny_elmo, layer_mix="top", device="cpu")
    cached_features(other, batch, messages.append, cache_root=tmp_path)  # another mix is another entry
    assert "computing" in messages[-1] and len(list(tmp_path.glob("*.npy"))) == 2


def test_device_falls_back_to_cpu_with_a_log_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    lines = []
    assert resolve_device("cuda", lines.append) == "cpu"
    assert "no CUDA device" in lines[0] and "CPU" in lines[0]
    assert resolve_device("auto", lines.append) == "cpu" and len(lines) == 1
    with pytest.raises(UsageError):
        resolve_device("tpu")


def test_an_elmoformanylangs_that_cannot_import_is_a_model_error_that_says_why(tiny_elmo, tmp_path, monkeypatch):
    import sys

    from sentiscore.errors import ModelError

    # overrides<4 raises IndexError while elmoformanylangs imports on Python 3.12: stand-in package.
    (tmp_path / "elmoformanylangs").mkdir()
    (tmp_path / "elmoformanylangs" / "__init__.py").write_text("raise IndexError('tuple index out of range')\n")
    for name in [m for m in sys.modules if m.split(".")[0] == "elmoformanylangs"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "version_info", (3, 12, 3, "final", 0))
    with pytest.raises(ModelError, match=r"ELMo needs Python 3\.11.*overrides<4.*Python 3\.12"):
        ElmoEmbedder(tiny_elmo, device="cpu")
    monkeypatch.setattr(sys, "version_info", (3, 11, 7, "final", 0))
    with pytest.raises(IndexError):  # not ours to explain on 3.11: passed on as it is
        ElmoEmbedder(tiny_elmo, device="cpu")
    monkeypatch.setitem(sys.modules, "elmoformanylangs", None)
    with pytest.raises(ModelError, match="pip install"):
        ElmoEmbedder(tiny_elmo, device="cpu")


def test_the_bilm_batch_follows_the_device_it_runs_on_unless_given(tiny_elmo):
    import torch

    from sentiscore.embed.elmo import BILM_BATCH_TEXTS

    assert BILM_BATCH_TEXTS["cuda"] > BILM_BATCH_TEXTS["cpu"]
    assert ElmoEmbedder(tiny_elmo, device="cpu").batch_size == BILM_BATCH_TEXTS["cpu"]
    # --device cuda on a machine without one runs on the CPU, in the CPU's batches.
    asked_for_gpu = ElmoEmbedder(tiny_elmo, device="cuda")
    assert asked_for_gpu.batch_size == BILM_BATCH_TEXTS[asked_for_gpu.device]
    assert asked_for_gpu.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ElmoEmbedder(tiny_elmo, device="cpu", batch_size=7).batch_size == 7


def test_a_batch_of_all_distinct_words_trains(tmp_path):
    """16 windows x 22 tokens, all distinct: elmoformanylangs' sampled
    softmax would spin forever here at 64 samples; the adaptive softmax
    head has no such limit, and its held-out perplexity is over the whole
    vocabulary (finite, at most about the vocabulary size for a barely
    trained model)."""
    import math

    from sentiscore.embed.elmo_pretrain import pretrain

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(f"词{i}_{j}" for j in range(20)) for i in range(40)) + "\n", encoding="utf-8")
    card = pretrain([corpus], tmp_path / "lm", tiny_elmo_config(), log=lambda m: None, progress=False)
    assert card["settings"]["softmax_cutoffs"] and all(c < card["vocabulary"] for c in card["settings"]["softmax_cutoffs"])
    assert math.isfinite(card["valid_perplexity"]) and 1 < card["valid_perplexity"] < 3 * card["vocabulary"]


def test_resume_continues_from_the_last_epoch_and_refuses_other_settings(tmp_path):
    from sentiscore.embed.elmo_pretrain import pretrain

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((SAMPLE / "reviews.csv").read_text(encoding="utf-8").replace(",", " "), encoding="utf-8")
    out = tmp_path / "lm"
    pretrain([corpus], out, tiny_elmo_config(epochs=1), log=lambda m: None, progress=False)
    with pytest.raises(UsageError, match="not empty"):
        pretrain([corpus], out, tiny_elmo_config(epochs=2), log=lambda m: None, progress=False)
    lines = []
    card = pretrain([corpus], out, tiny_elmo_config(epochs=2), resume=True, log=lines.append, progress=False)
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    assert any("resuming" in line and "after epoch 1" in line for line in lines)
    with pytest.raises(UsageError, match="other settings"):
        pretrain([corpus], out, tiny_elmo_config(epochs=3, lstm_dim=16), resume=True, log=lambda m: None, progress=False)


def test_the_learning_rate_is_constant_then_falls_to_zero_over_the_annealed_epochs():
    from sentiscore.embed.elmo_pretrain import learning_rate_at

    config = tiny_elmo_config(epochs=3, anneal_epochs=2, learning_rate=0.01)
    rates = [learning_rate_at(config, epoch, step, 10) for epoch in range(3) for step in range(10)]
    assert rates[:10] == [0.01] * 10
    assert all(later < earlier for earlier, later in zip(rates[10:], rates[11:]))
    assert rates[20] == pytest.approx(0.005) and rates[-1] == pytest.approx(0.01 / 20)
    assert learning_rate_at(tiny_elmo_config(epochs=2), 1, 9, 10) == tiny_elmo_config().learning_rate
    with pytest.raises(UsageError, match="--anneal-epochs"):
        tiny_elmo_config(epochs=2, anneal_epochs=3)


def test_a_finished_run_resumes_into_an_annealed_epoch(tmp_path):
    """--anneal-epochs may change on --resume: one constant-rate epoch, then
    one that decays; the optimizer ran at the scheduled rates."""
    from sentiscore.embed.elmo_pretrain import pretrain

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((SAMPLE / "reviews.csv").read_text(encoding="utf-8").replace(",", " "), encoding="utf-8")
    out = tmp_path / "lm"
    first = pretrain([corpus], out, tiny_elmo_config(epochs=1), log=lambda m: None, progress=False)
    assert first["history"][0]["last_learning_rate"] == tiny_elmo_config().learning_rate
    card = pretrain([corpus], out, tiny_elmo_config(epochs=2, anneal_epochs=1), resume=True, log=lambda m: None, progress=False)
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    assert 0 < card["history"][1]["last_learning_rate"] < tiny_elmo_config().learning_rate / 2
    assert card["settings"]["anneal_epochs"] == 1
    import torch

    state = torch.load(out / "training_state.pt", map_location="cpu", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(card["history"][1]["last_learning_rate"])


def test_only_the_elmo_modules_import_torch():
    root = Path(__file__).resolve().parent.parent / "sentiscore"
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "torch" or n.startswith("torch.") or n.startswith("elmoformanylangs") for n in names):
                importers.add(str(path.relative_to(root)))
    assert importers == {"embed/elmo.py", "embed/elmo_pretrain.py"}, importers


def test_train_and_score_end_to_end_with_elmo(tiny_elmo_model, tmp_path):
    import pyarrow.parquet as pq

    from sentiscore.artifacts import read_meta
    from sentiscore.config import ScoreConfig
    from sentiscore.pipeline import score_file

    meta = read_meta(tiny_elmo_model)
    assert meta["embedder"]["type"] == "elmo" and meta["embedder"]["layer_mix"] == "scalar"
    assert meta["embedder"]["dim"] == 16 and meta["embedder"]["elmo"]["epochs"] == 1
    manifest = json.loads((tiny_elmo_model / "manifest.json").read_text())["files"]
    assert {"elmo/encoder.pkl", "elmo/token_embedder.pkl", "elmo/char.dic", "elmo/config.json", "elmo/network.json"} <= set(manifest)
    out = tmp_path / "scored.parquet"
    summary = score_file(SAMPLE / "reviews.parquet", out, model=tiny_elmo_model, config=ScoreConfig(workers=1, quiet=True))
    table = pq.read_table(out)
    assert table.num_rows == 300 and summary.rows == 300
    assert set(table.column("label").to_pylist()) <= {"负评", "中评", "正评"}
    probs = np.stack([table.column(f"prob_{n}").to_numpy() for n in ("负评", "中评", "正评")], axis=1)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    metadata = table.schema.metadata
    assert metadata[b"sentiscore.embedder"].startswith(b"elmo tiny-elmo 16-d scalar on cpu")
    assert metadata[b"sentiscore.torch_version"]
    assert "embedder elmo tiny-elmo" in summary.line() and " torch " in summary.line()
    # Top words are real tokens of their own text.
    for text, words in zip(table.column("txt").to_pylist()[:50], table.column("top_words").to_pylist()[:50]):
        assert all(w in text.lower() for w in words)


def test_scoring_checks_the_layer_mix(tiny_elmo_model, tmp_path):
    from click.testing import CliRunner

    from sentiscore.cli import cli

    result = CliRunner().invoke(cli, ["score", str(SAMPLE / "reviews.csv"), str(tmp_path / "o.parquet"), "-m", str(tiny_elmo_model),
                                      "--layer-mix", "average", "--workers", "1"])
    assert result.exit_code == 2
    assert "ELMo layer mix average (model: scalar)" in result.output
    assert not (tmp_path / "o.parquet").exists()


def test_tampered_elmo_weights_are_refused(tiny_elmo_model, tmp_path):
    import shutil

    from sentiscore.artifacts import load_model_dir
    from sentiscore.errors import ModelError

    copy = tmp_path / "copy"
    shutil.copytree(tiny_elmo_model, copy)
    with open(copy / "elmo" / "encoder.pkl", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError, match="elmo/encoder.pkl does not match its sha256"):
        load_model_dir(copy)


def test_train_cli_needs_an_elmo_model(tmp_path):
    from click.testing import CliRunner

    from sentiscore.cli import cli

    result = CliRunner().invoke(cli, ["train", str(SAMPLE / "labelled.csv"), "--out", str(tmp_path / "m"), "--embedder", "elmo",
                                      "--workers", "1", "-q"])
    assert result.exit_code == 2
    assert "--embedder elmo needs --elmo-model DIR" in result.output


def test_pretrain_cli_refuses_a_missing_corpus_and_has_help(tmp_path):
    from click.testing import CliRunner

    from sentiscore.cli import cli

    result = CliRunner().invoke(cli, ["elmo", "pretrain", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "lm")])
    assert result.exit_code == 2 and "corpus" in result.output and "does not exist" in result.output
    help_text = CliRunner().invoke(cli, ["elmo", "pretrain", "--help"]).output
    assert "elmoformanylangs.Embedder" in help_text and "--resume" in help_text


def test_out_of_memory_halves_the_batch(tiny_elmo, monkeypatch):
    import torch

    embedder = ElmoEmbedder(tiny_elmo, layer_mix="top", device="cpu", batch_size=4)
    expected = embedder.embed(SENTENCES)
    real_run = embedder._run
    sizes = []

    def run_small_batches_only(sentences):
        sizes.append(len(sentences))
        if len(sentences) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_run(sentences)

    monkeypatch.setattr(embedder, "_run", run_small_batches_only)
    np.testing.assert_allclose(embedder.embed(SENTENCES), expected, atol=1e-5)
    assert sizes[0] == 3 and sizes.count(1) == 3


def test_network_config_falls_back_to_the_configs_elmoformanylangs_ships(tiny_elmo, tmp_path):
    """HIT-SCIR's released folders name a config that lives in the package."""
    import shutil

    from sentiscore.embed.elmo import network_config_path
    from sentiscore.errors import ModelError

    folder = tmp_path / "zhs.model"
    shutil.copytree(tiny_elmo, folder)
    (folder / "network.json").unlink()
    (folder / "config.json").write_text(json.dumps({"config_path": "../configs/cnn_50_100_512_4096_sample.json"}))
    found = network_config_path(folder)
    assert found.parent.name == "configs" and json.loads(found.read_text())["encoder"]["projection_dim"] == 512
    (folder / "config.json").write_text(json.dumps({"config_path": "/elsewhere/mine.json"}))
    with pytest.raises(ModelError, match="mine.json, which is neither in"):
        network_config_path(folder)


def test_info_card_describes_the_elmo_embedder(tiny_elmo_model):
    from click.testing import CliRunner

    from sentiscore.cli import cli

    result = CliRunner().invoke(cli, ["info", str(tiny_elmo_model)])
    assert result.exit_code == 0, result.output
    assert "embedder: ELMo tiny-elmo (16-d, 3 layers, mix scalar" in result.output
    assert "corpus.csv" in result.output and "1 epochs" in result.output


def test_token_cache_is_exact_across_generations_and_overflow(tiny_elmo):
    texts = [["好", "手机", "不", "喜欢"], ["手机", "很", "好"], ["物流", "手机"], ["从来", "没有", "见过", "这么", "差", "的"]] * 3
    embedder = ElmoEmbedder(tiny_elmo, layer_mix="scalar", device="cpu", batch_size=3)
    cached = embedder.embed(texts)
    assert 0 < len(embedder.token_cache) <= 15 and embedder.token_cache.computed == len(embedder.token_cache)  # each once
    embedder.token_cache = TokenVectorCache(embedder.token_cache.width, "cpu", embedder._embed_tokens, generation_rows=9)
    rotated = embedder.embed(texts)  # batches of 3 texts: the generations turn over, tokens in use are copied forward
    assert embedder.token_cache.copied > 0 and len(embedder.token_cache) <= 2 * 9
    embedder.token_cache = TokenVectorCache(embedder.token_cache.width, "cpu", embedder._embed_tokens, generation_rows=4)
    overflowing = embedder.embed(texts)  # fewer rows than one batch's distinct tokens: that batch's table is larger
    embedder.cache_tokens = False  # elmoformanylangs' own forward over the whole padded batch
    reference = embedder.embed(texts)
    for vectors in (cached, rotated, overflowing):
        np.testing.assert_allclose(vectors, reference, atol=1e-6)


def test_token_cache_holds_at_most_two_generations_in_two_tables_and_keeps_tokens_in_use(tiny_elmo):
    embedder = ElmoEmbedder(tiny_elmo, layer_mix="scalar", device="cpu", batch_size=2)
    cache = embedder.token_cache = TokenVectorCache(embedder.token_cache.width, "cpu", embedder._embed_tokens, generation_rows=8)
    common = ["手机", "好"]
    words = [f"词{i}" for i in range(40)]
    batches = [[common + words[i : i + 2]] for i in range(0, 40, 2)]  # each batch: the two common words and two new ones
    outputs, tables_seen = [], set()
    for batch in batches:
        outputs.append(embedder.embed(batch))
        tables_seen |= {id(t) for t in cache._tables if t is not None}
        assert len(cache) <= 16 and all(t is None or t.shape[0] == 8 for t in cache._tables)
    assert len(tables_seen) == 2  # two tables swap roles: never a third allocation
    # The common words and <bos>/<eos> were computed once and copied forward at every turn; the new words once each.
    assert cache.computed == 4 + 40 and cache.copied > 0
    embedder.cache_tokens = False
    for batch, vectors in zip(batches, outputs):
        np.testing.assert_allclose(vectors, embedder.embed(batch), atol=1e-6)


def test_unseen_tokens_run_in_few_padded_shapes_and_stay_exact(tiny_elmo, monkeypatch):
    from sentiscore.embed import elmo

    texts = [["好", "手机", "不", "喜欢"], ["手机", "很", "好"], ["物流", "手机"], ["从来", "没有", "见过", "这么", "差", "的"]] * 3
    embedder = ElmoEmbedder(tiny_elmo, layer_mix="scalar", device="cpu", batch_size=4)
    counts = []
    embed_tokens = embedder.model.token_embedder.forward
    monkeypatch.setattr(embedder.model.token_embedder, "forward",
                        lambda words, chars, shape: counts.append(shape[0]) or embed_tokens(words, chars, shape))
    monkeypatch.setattr(elmo, "_TOKEN_SLICE", 4)
    monkeypatch.setattr(elmo, "_TOKEN_SLICE_MIN", 2)
    sliced = embedder.embed(texts)
    assert counts and set(counts) <= {2, 4}  # 14 distinct tokens with <bos>/<eos>: slices of 4, the rest padded
    assert len(embedder.token_cache) == 14 and embedder.tensors._char_rows == {}  # outputs kept, not characters
    embedder.cache_tokens = False
    np.testing.assert_allclose(sliced, embedder.embed(texts), atol=1e-6)


@pytest.mark.parametrize("go_forward", [True, False])
@pytest.mark.parametrize("with_initial_state", [False, True])
@pytest.mark.parametrize("gate_steps", [16, 4, 1])  # one block of input gates, blocks across the rows' ends, one per step
def test_fused_lstm_cell_matches_the_reference_clipping_included(go_forward, with_initial_state, gate_steps, monkeypatch):
    import torch
    from elmoformanylangs.modules.lstm_cell_with_projection import LstmCellWithProjection

    from sentiscore.embed import elmo
    from sentiscore.embed.elmo import projected_lstm_inference

    monkeypatch.setattr(elmo, "_INPUT_GATE_STEPS", gate_steps)

    torch.manual_seed(0)
    cell = LstmCellWithProjection(12, 8, 20, go_forward, recurrent_dropout_probability=0.1,
                                  memory_cell_clip_value=1.5, state_projection_clip_value=0.8).eval()
    with torch.no_grad():  # large weights, so that both clips are hit
        for linear in (cell.input_linearity, cell.state_linearity, cell.state_projection):
            linear.weight.mul_(6.0)
    lengths = [9, 9, 7, 4, 4, 1]  # sorted longest first, as sort_and_run_forward passes them
    inputs = torch.randn(len(lengths), max(lengths), 12)
    for row, n in enumerate(lengths):
        inputs[row, n:] = 0.0
    initial = (torch.randn(1, len(lengths), 8) * 0.5, torch.randn(1, len(lengths), 20)) if with_initial_state else None
    with torch.inference_mode():
        expected, (expected_state, expected_memory) = cell(inputs, lengths, initial)
        ours, (state, memory) = projected_lstm_inference(cell, inputs, lengths, initial)
    assert (expected.abs() == 0.8).any() and (expected_memory.abs() == 1.5).any(), "the test must exercise both clips"
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state, expected_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(memory, expected_memory, atol=1e-5, rtol=1e-5)
    for row, n in enumerate(lengths):  # nothing is written past a row's length
        assert torch.count_nonzero(ours[row, n:]) == 0


def test_inference_embedder_uses_the_fused_cells_and_training_keeps_the_reference(tiny_elmo):
    from elmoformanylangs.modules.lstm_cell_with_projection import LstmCellWithProjection

    from sentiscore.embed.elmo import load_bilm

    network = read_network_config(tiny_elmo)
    cells = 2 * network["encoder"]["n_layers"]
    inference, *_ = load_bilm(tiny_elmo, "cpu")
    training, *_ = load_bilm(tiny_elmo, "cpu", training=True)
    fused = [m for m in inference.encoder.modules() if isinstance(m, LstmCellWithProjection) and "forward" in vars(m)]
    reference = [m for m in training.encoder.modules() if isinstance(m, LstmCellWithProjection) and "forward" in vars(m)]
    assert len(fused) == cells and reference == []


def test_encoding_on_a_thread_gives_the_serial_results_and_passes_errors_on(tiny_elmo_model):
    import pandas as pd

    from sentiscore.pipeline import Scorer

    texts = pd.read_parquet(SAMPLE / "reviews.parquet")["txt"].head(60).tolist()
    # cascade=False: every row through the biLM, so there are batches to overlap.
    with Scorer.from_model(tiny_elmo_model, workers=1, batch_size=8, cascade=False) as scorer:
        scorer.embedder.encodes_in_background = False
        serial = scorer.predict(texts)
        assert scorer._encoder_thread is None
        scorer.embedder.encodes_in_background = True
        overlapped = scorer.predict(texts)
        assert scorer._encoder_thread is not None  # several batches: the thread ran
        pd.testing.assert_frame_equal(overlapped, serial)

        calls = []

        def failing_encode(features, rows, width):
            calls.append(rows.size)
            if len(calls) == 3:
                raise RuntimeError("biLM failed on batch 3")
            return type(scorer.embedder).encode(scorer.embedder, features, rows, width)

        scorer.embedder.encode = failing_encode
        with pytest.raises(RuntimeError, match="batch 3"):
            scorer.predict(texts)
    assert scorer._encoder_thread is None  # closed with the scorer


def test_elmo_models_score_in_smaller_batches_unless_told(tiny_elmo_model, tiny_model):
    from sentiscore.embed.elmo import BILM_BATCH_TEXTS
    from sentiscore.pipeline import DEFAULT_SCORE_BATCH, Scorer

    assert BILM_BATCH_TEXTS["cpu"] < DEFAULT_SCORE_BATCH
    with Scorer.from_model(tiny_elmo_model, workers=1) as elmo, Scorer.from_model(tiny_model, workers=1) as vocab:
        assert elmo.batch_size == elmo.predictor.batch_size == BILM_BATCH_TEXTS[elmo.embedder.device]
        assert vocab.batch_size == DEFAULT_SCORE_BATCH
    with Scorer.from_model(tiny_elmo_model, workers=1, batch_size=100) as told:
        assert told.batch_size == told.predictor.batch_size == 100


def test_a_run_stopped_mid_epoch_resumes_from_its_checkpoint(tmp_path):
    """With checkpoints inside the epoch, a run killed after one resumes from
    that batch: the finished run has seen each training token once."""
    from sentiscore.embed.elmo_pretrain import pretrain

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((SAMPLE / "reviews.csv").read_text(encoding="utf-8").replace(",", " "), encoding="utf-8")
    clean = pretrain([corpus], tmp_path / "clean", tiny_elmo_config(batch_size=4), checkpoint_minutes=None,
                     log=lambda m: None, progress=False)

    class Killed(Exception):
        pass

    def kill_at_first_checkpoint(message):
        if "checkpoint saved" in message:
            raise Killed

    out = tmp_path / "lm"
    with pytest.raises(Killed):
        pretrain([corpus], out, tiny_elmo_config(batch_size=4), checkpoint_minutes=1e-9, log=kill_at_first_checkpoint, progress=False)
    stopped = json.loads((out / "sentiscore_elmo.json").read_text(encoding="utf-8"))
    assert stopped["history"] == [] and 0 < stopped["in_progress"]["batches"] < stopped["in_progress"]["of"]
    assert 0 < stopped["tokens_seen"] < clean["tokens_seen"]
    lines = []
    card = pretrain([corpus], out, tiny_elmo_config(batch_size=4), resume=True, checkpoint_minutes=None, log=lines.append,
                    progress=False)
    assert any(f"batch {stopped['in_progress']['batches']:,} of epoch 1" in line for line in lines)
    assert card["tokens_seen"] == clean["tokens_seen"] == card["history"][0]["tokens"] and card["in_progress"] is None


def test_init_continues_from_a_pretrained_bilm_on_new_text(tiny_elmo, tmp_path):
    """Domain adaptation: the shape and the character ids of the biLM it
    starts from are kept, new characters are added, the LM vocabulary is
    rebuilt, tokens seen add up; another shape is refused."""
    from sentiscore.config import ElmoPretrainConfig
    from sentiscore.embed.elmo import read_lexicon, read_network_config
    from sentiscore.embed.elmo_pretrain import pretrain

    corpus = tmp_path / "cars.txt"
    corpus.write_text("\n".join(["油耗 很 低 变速箱 平顺", "底盘 异响 售后 推诿", "内饰 做工 一般 般"] * 20) + "\n", encoding="utf-8")
    config = ElmoPretrainConfig.from_network(read_network_config(tiny_elmo), epochs=1, batch_size=16, max_sent_len=20,
                                             min_count=1, valid_fraction=0.05)
    base = json.loads((tiny_elmo / "sentiscore_elmo.json").read_text(encoding="utf-8"))
    card = pretrain([corpus], tmp_path / "adapted", config, init=tiny_elmo, log=lambda m: None, progress=False)
    assert card["init"]["path"] == str(tiny_elmo) and len(card["init"]["encoder_sha256"]) == 12
    assert card["tokens_seen"] == base["tokens_seen"] + card["tokens_seen_this_run"]
    old, new = read_lexicon(tiny_elmo / "char.dic"), read_lexicon(tmp_path / "adapted" / "char.dic")
    assert all(new[ch] == i for ch, i in old.items()) and "箱" in new
    assert "变速箱" in read_lexicon(tmp_path / "adapted" / "word.dic")
    with pytest.raises(UsageError, match="differs"):
        pretrain([corpus], tmp_path / "other", tiny_elmo_config(lstm_dim=16), init=tiny_elmo, log=lambda m: None, progress=False)


def test_elmo_pretrain_init_from_the_cli(tiny_elmo, tmp_path):
    from click.testing import CliRunner

    from sentiscore.cli import cli

    corpus = tmp_path / "mine.txt"
    corpus.write_text("\n".join(["这 车 油耗 很 低", "售后 服务 太 差"] * 30) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["elmo", "pretrain", str(corpus), "--out", str(tmp_path / "mine"), "--init", str(tiny_elmo),
                                      "--epochs", "1", "--batch-size", "8", "--min-count", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "tokens seen" in result.output
    result = CliRunner().invoke(cli, ["elmo", "pretrain", str(corpus), "--out", str(tmp_path / "x"), "--init", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "--init" in result.output


def test_a_classifier_must_segment_as_its_bilm_was_pretrained(tiny_elmo, tmp_path):
    """The biLM read text without the built-in stopwords; a classifier that
    keeps them would feed it contexts it never saw: refused before training."""
    from sentiscore.config import EmbedderConfig, SegmenterConfig
    from sentiscore.train import train

    from .conftest import tiny_config

    card = json.loads((tiny_elmo / "sentiscore_elmo.json").read_text(encoding="utf-8"))
    assert card["segmenter"]["stopwords"] == "builtin" and len(card["segmenter"]["stopwords_sha256"]) == 16
    config = tiny_config(embedder=EmbedderConfig(type="elmo", maxlen=48), elmo_model=str(tiny_elmo),
                         segmenter=SegmenterConfig(stopwords="none"))
    with pytest.raises(UsageError, match="stopwords builtin"):
        train(SAMPLE / "labelled.csv", tmp_path / "m", config, log=lambda m: None, verbose=0)
    assert not (tmp_path / "m").exists()


def test_bfloat16_lstms_move_vectors_slightly_and_float32_restores_them(tiny_elmo):
    """--elmo-precision bfloat16 runs the biLM's LSTMs in bf16: each vector
    moves, but by far less than vectors of different words differ; switching
    back gives the float32 vectors exactly."""
    import torch

    embedder = ElmoEmbedder(tiny_elmo, layer_mix="scalar", device="cpu", batch_size=2)
    reference = embedder.embed(SENTENCES)
    embedder.set_precision("bfloat16")
    assert embedder.model.encoder.parameters().__next__().dtype == torch.bfloat16
    approximate = embedder.embed(SENTENCES)
    assert approximate.dtype == np.float32 and approximate.shape == reference.shape
    moved = np.abs(approximate - reference)
    assert moved.max() > 0  # the LSTM layers really ran in bf16
    np.testing.assert_array_equal(approximate[:, 0], reference[:, 0])  # the token layer (char-CNN) stays float32
    assert moved.mean() < 0.02 * np.abs(reference).mean()
    embedder.set_precision("float32")
    np.testing.assert_allclose(embedder.embed(SENTENCES), reference, atol=1e-6)
    with pytest.raises(UsageError, match="--elmo-precision must be one of"):
        embedder.set_precision("float16")


def test_score_elmo_precision_is_recorded_and_refused_for_models_without_elmo(tiny_elmo_vocab_model, tiny_model, tmp_path):
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from sentiscore.cli import cli

    runner = CliRunner()
    outputs = {}
    for precision in ("float32", "bfloat16"):
        outputs[precision] = tmp_path / f"{precision}.parquet"
        result = runner.invoke(cli, ["score", str(SAMPLE / "reviews.csv"), str(outputs[precision]), "-m", str(tiny_elmo_vocab_model),
                                     "--workers", "1", "--elmo-precision", precision, "--no-cascade"])
        assert result.exit_code == 0, result.output
    bf16 = pq.read_table(outputs["bfloat16"])
    f32 = pq.read_table(outputs["float32"])
    assert bf16.schema.metadata[b"sentiscore.embedder"].endswith(b" on cpu bfloat16")
    assert not f32.schema.metadata[b"sentiscore.embedder"].endswith(b"bfloat16")
    assert "bfloat16 torch" in result.stderr
    probs = [np.stack([t.column(f"prob_{n}").to_numpy() for n in ("负评", "中评", "正评")], axis=1) for t in (f32, bf16)]
    assert 0 < np.abs(probs[0] - probs[1]).max() < 0.05
    refused = runner.invoke(cli, ["score", str(SAMPLE / "reviews.csv"), str(tmp_path / "no.parquet"), "-m", str(tiny_model),
                                  "--workers", "1", "--elmo-precision", "bfloat16"])
    assert refused.exit_code == 2 and "--elmo-precision applies to ELMo models" in refused.output
    assert not (tmp_path / "no.parquet").exists()
