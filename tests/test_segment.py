import os

import numpy as np
import pytest

from sentiscore.config import SegmenterConfig
from sentiscore.errors import InputError
from sentiscore.segment import ParallelSegmenter, Segmenter, is_word, load_stopwords, normalize_text

NEGATIONS_AND_DEGREE = ["不", "没", "没有", "别", "无", "非", "未", "很", "太", "最", "非常", "特别", "有点", "但是", "却"]


def test_builtin_stopwords_keep_negations_and_degree_words():
    stop = load_stopwords("builtin")
    assert "的" in stop and "了" in stop
    for word in NEGATIONS_AND_DEGREE:
        assert word not in stop, word


def test_stopwords_are_really_removed():
    seg = Segmenter(SegmenterConfig(), maxlen=50)
    tokens, _ = seg.tokenize("我的手机是黑色的")
    assert "的" not in tokens and "我" not in tokens
    assert "手机" in tokens


def test_negation_survives_segmentation():
    seg = Segmenter(SegmenterConfig(), maxlen=50)
    tokens, _ = seg.tokenize("质量不好，不推荐")
    assert "不" in tokens or "不好" in tokens


def test_punctuation_emoji_and_whitespace_are_not_tokens():
    seg = Segmenter(SegmenterConfig(), maxlen=50)
    tokens, _ = seg.tokenize("好！！！😀 ，。 ？  ")
    assert tokens == ["好"]
    assert seg.tokenize("😀😀！？")[0] == []


def test_normalisation_folds_width_and_case():
    assert normalize_text("ＧＯＯＤ Phone") == "good phone"
    assert is_word("a1") and is_word("好") and not is_word("！？") and not is_word("😀")


def test_truncation_to_maxlen_is_flagged():
    seg = Segmenter(SegmenterConfig(), maxlen=5)
    tokens, cut = seg.tokenize("手机 电脑 平板 耳机 键盘 鼠标 屏幕")
    assert len(tokens) == 5 and cut
    tokens, cut = seg.tokenize("手机 电脑")
    assert not cut


def test_huge_text_is_cut_at_max_chars():
    seg = Segmenter(SegmenterConfig(max_chars=100), maxlen=1000)
    tokens, cut = seg.tokenize("好" * 1_000_000)
    assert cut and 0 < len(tokens) <= 100


def test_user_dictionary_changes_segmentation(tmp_path):
    text = "我爱吃蓝莓芝士蛋糕"
    plain = Segmenter(SegmenterConfig(stopwords="none"), maxlen=50).tokenize(text)[0]
    assert "蓝莓芝士蛋糕" not in plain
    user_dict = tmp_path / "user.txt"
    user_dict.write_text("蓝莓芝士蛋糕 1000 n\n", encoding="utf-8")
    custom = Segmenter(SegmenterConfig(stopwords="none", user_dict=str(user_dict)), maxlen=50).tokenize(text)[0]
    assert "蓝莓芝士蛋糕" in custom


def test_missing_user_dictionary_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        Segmenter(SegmenterConfig(user_dict=str(tmp_path / "nope.txt")), maxlen=10)


def test_parallel_matches_serial_and_keeps_order(sample_dir, tmp_path):
    import pandas as pd

    texts = pd.read_csv(sample_dir / "labelled.csv").txt.tolist()
    user_dict = tmp_path / "user.txt"
    user_dict.write_text("性价比很高 1000 n\n", encoding="utf-8")
    config = SegmenterConfig(user_dict=str(user_dict))
    serial = Segmenter(config, maxlen=64).segment(texts)
    with ParallelSegmenter(config, maxlen=64, workers=2) as parallel:
        parallel.min_parallel_texts = 1  # force the worker processes (spawned: they load the user dict themselves)
        result = parallel.segment(texts)
        assert parallel._pool is not None
    assert result.tokens == serial.tokens
    np.testing.assert_array_equal(result.lengths, serial.lengths)
    np.testing.assert_array_equal(result.truncated, serial.truncated)
    # One list per text, each its own tokens, empty texts included.
    lists = result.token_lists()
    assert len(lists) == len(texts) and lists == [result.tokens_of(i) for i in range(len(texts))]
    assert [len(tokens) for tokens in lists] == result.lengths.tolist()


def test_a_batch_holds_each_distinct_word_once_also_after_pickling():
    import pickle

    seg = Segmenter(SegmenterConfig(), maxlen=50)
    texts = ["手机很好", "手机不好，很不好", "手机"]
    batch = seg.segment(texts)
    assert batch.token_lists() == [seg.tokenize(t)[0] for t in texts]
    # What a worker sends and the parent keeps: one object per word, not per occurrence.
    received = pickle.loads(pickle.dumps(batch))
    assert received.tokens == batch.tokens and received.tokens.count("手机") == 3 and received.tokens.count("不好") == 2
    assert len({id(t) for t in received.tokens}) == len(set(received.tokens))


@pytest.mark.skipif(not hasattr(os, "nice"), reason="niceness is a Unix setting")
def test_workers_run_nicer_than_the_caller_and_can_start_early():
    with ParallelSegmenter(SegmenterConfig(), maxlen=10, workers=2, nice=7) as segmenter:
        segmenter.start()
        pool = segmenter._pool
        assert pool is not None and len(pool._processes) == 2  # both spawned before any text arrived
        assert {pool.submit(os.nice, 0).result() for _ in range(4)} == {min(19, os.nice(0) + 7)}
        segmenter.min_parallel_texts = 1
        texts = ["质量很好", "太差了"]
        assert segmenter.segment(texts).tokens == Segmenter(SegmenterConfig(), maxlen=10).segment(texts).tokens
    with ParallelSegmenter(SegmenterConfig(), maxlen=10, workers=2) as segmenter:  # the default: the caller's priority
        segmenter.start()
        assert segmenter._pool.submit(os.nice, 0).result() == os.nice(0)
    single = ParallelSegmenter(SegmenterConfig(), maxlen=10, workers=1, nice=7)
    single.start()  # one worker means this process segments: nothing to start
    assert single._pool is None


def test_jieba_cache_goes_to_the_configured_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTISCORE_CACHE_DIR", str(tmp_path))
    Segmenter(SegmenterConfig(), maxlen=10)
    assert (tmp_path / "jieba" / "jieba.cache").is_file()


def _die_in_worker(texts):
    import os

    os._exit(3)


def test_a_dying_worker_raises_instead_of_hanging():
    from sentiscore.errors import WorkerError

    segmenter = ParallelSegmenter(SegmenterConfig(), maxlen=10, workers=2)
    segmenter.min_parallel_texts = 1
    segmenter.worker_function = _die_in_worker
    try:
        with pytest.raises(WorkerError, match="segmentation worker process died"):
            segmenter.segment(["好"] * 10)
    finally:
        segmenter.close()
    assert segmenter._pool is None


def test_social_markup_is_normalised():
    seg = Segmenter(SegmenterConfig(stopwords="none"), maxlen=50)
    tokens, _ = seg.tokenize("转发微博 //@小明_2010: 太坑了[怒][怒] http://t.cn/zOabc12 #双十一# ＠李四 谢谢[哈哈]，见[12]")
    assert "[怒]" in tokens and tokens.count("[怒]") == 2 and "[哈哈]" in tokens
    for noise in ("http", "t", "cn", "zoabc12", "小明", "2010", "李四"):
        assert noise not in tokens, noise
    assert "双十" in tokens or "双十一" in tokens  # the tag's text stays
    assert "12" in tokens and "[12]" not in tokens  # a bracketed number is a reference, not an emoticon


def test_keep_markup_segments_it_as_text():
    seg = Segmenter(SegmenterConfig(stopwords="none", markup="keep"), maxlen=50)
    tokens, _ = seg.tokenize("太坑了[怒] http://t.cn/zOabc12 @小明")
    assert "怒" in tokens and "[怒]" not in tokens and "http" in tokens and "小明" in tokens


def test_markup_mode_is_validated():
    from sentiscore.errors import UsageError

    with pytest.raises(UsageError, match="--markup must be one of social, keep"):
        SegmenterConfig(markup="weibo")


def test_markup_mode_travels_with_the_model(tiny_model, tmp_path):
    import json

    from sentiscore.artifacts import trained_segmenter_config, trained_wide_config

    meta = json.loads((tiny_model / "meta.json").read_text())
    assert meta["segmenter"]["markup"] == "social" and meta["wide"]["markup"] == "social"
    assert trained_segmenter_config(tiny_model, meta).markup == "social"
    # Cards written before the setting existed segmented markup as text.
    old = {**meta, "segmenter": {k: v for k, v in meta["segmenter"].items() if k != "markup"},
           "wide": {k: v for k, v in meta["wide"].items() if k != "markup"}}
    assert trained_segmenter_config(tiny_model, old).markup == "keep"
    assert trained_wide_config(old).markup == "keep"
