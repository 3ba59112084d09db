import subprocess
import sys

import numpy as np

from sentiscore.config import WideConfig
from sentiscore.ngrams import CharNgramHasher


def hasher(**kw):
    return CharNgramHasher(WideConfig(num_buckets=kw.pop("num_buckets", 1 << 16), weighting=kw.pop("weighting", "count"), **kw))


def test_idf_weighting_gives_each_distinct_ngram_once_in_order():
    counted, distinct = hasher().transform(["好好好好"]), hasher(weighting="idf").transform(["好好好好"])
    assert (counted != 0).sum() == 4 + 3 + 2
    ids = distinct[distinct != 0]
    assert ids.size == 3 and (np.diff(ids) > 0).all() and set(ids) == set(counted[counted != 0])


def test_counts_of_1_to_3_grams_per_text():
    ids = hasher().transform(["好吃", "很好吃啊", "", "a"])
    counts = (ids != 0).sum(axis=1)
    # n chars give n + (n-1) + (n-2) n-grams (never below zero per order)
    assert counts.tolist() == [3, 9, 0, 1]
    assert ids.dtype == np.int32 and ids.shape[0] == 4


def test_ngrams_do_not_cross_text_boundaries():
    together = hasher().transform(["ab", "cd"])
    alone = [hasher().transform([t]) for t in ("ab", "cd")]
    for row, single in zip(together, alone):
        assert sorted(row[row != 0]) == sorted(single[0][single[0] != 0])


def test_ids_are_in_range_and_zero_is_padding():
    h = hasher(num_buckets=97)
    ids = h.transform(["这家店的东西真不错，下次还来", "差"])
    real = ids[ids != 0]
    assert real.min() >= 1 and real.max() < 97
    assert (ids[1, 3:] == 0).all()


def test_normalisation_makes_width_and_case_variants_equal():
    a, b = hasher().transform(["ＧＯＯＤ好", "good好"])
    assert sorted(a) == sorted(b)


def test_max_chars_caps_the_features():
    ids = hasher(max_chars=10).transform(["好" * 1000])
    assert (ids != 0).sum() == 10 + 9 + 8


def test_hashing_is_the_same_in_another_process():
    texts = ["手机很好用", "质量太差了！"]
    here = hasher().transform(texts)
    code = (
        "import sys, numpy as np; from sentiscore.config import WideConfig; from sentiscore.ngrams import CharNgramHasher;"
        "ids = CharNgramHasher(WideConfig(num_buckets=1 << 16, weighting='count')).transform(['手机很好用', '质量太差了！']);"
        "sys.stdout.write(','.join(map(str, ids.ravel().tolist())))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert [int(v) for v in out.split(",")] == here.ravel().tolist()


def test_nul_characters_inside_texts_do_not_split_them():
    ids = hasher().transform(["a\x00b", "c"])
    assert ((ids != 0).sum(axis=1)).tolist() == [6, 1]


def test_social_markup_drops_links_and_mentions_from_the_ngrams():
    social, keep = hasher(), hasher(markup="keep")
    with_link = ["太好了 http://t.cn/zOabc12 @小明_2010 "]
    without = ["太好了     "]  # each removed piece leaves one space
    np.testing.assert_array_equal(social.transform(with_link), social.transform(without))
    assert keep.transform(with_link).shape[1] > keep.transform(without).shape[1]


def test_flat_ids_are_the_padded_rows_without_padding():
    texts = ["好评好评", "", "差", "质量一般般，物流很快", "!!"]
    for weighting in ("count", "idf"):
        hasher = CharNgramHasher(WideConfig(num_buckets=2**12, weighting=weighting))
        flat, counts = hasher.transform_flat(texts)
        padded = hasher.transform(texts)
        assert flat.dtype == np.int32 and counts.tolist() == (padded != 0).sum(axis=1).tolist()
        assert flat.tolist() == [i for row in padded.tolist() for i in row if i != 0]
    assert [a.shape for a in CharNgramHasher(WideConfig()).transform_flat([])] == [(0,), (0,)]
