import sentiscore


def test_load_and_predict_return_a_dataframe(tiny_model):
    scorer = sentiscore.load(tiny_model, workers=1)
    try:
        frame = scorer.predict(["物流很快，质量不错", "", "再也不买了"])
    finally:
        scorer.close()
    assert list(frame.columns[:2]) == ["text", "label"]
    assert frame.status.tolist() == ["ok", "empty", "ok"]
    assert frame.label.isna().tolist() == [False, True, False]


def test_score_file_takes_score_options(tiny_model, sample_dir, tmp_path):
    out = tmp_path / "api.jsonl"
    summary = sentiscore.score_file(sample_dir / "reviews.parquet", out, model=tiny_model, chunk_size=50, workers=1, top_k=1)
    assert summary.rows == 300 and out.exists()
    assert sum(summary.label_counts.values()) + summary.unlabelled == 300


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, sentiscore; assert not any(m in sys.modules for m in ('tensorflow', 'keras', 'torch', 'jieba_fast'))"
    subprocess.run([sys.executable, "-c", code], check=True)
