#!/usr/bin/env bash
# Reproduce the shipped zh-elmo model (on 2 quiet cores: about 2.5 hours for two
# epochs of biLM pretraining on the unlabelled corpus, 6 minutes for the word
# vectors, then about 35 for the classifier):
#   bash scripts/build_elmo_model.sh
# The biLM (zh-small: 2 x LSTM 512 projected to 128, the rate falling linearly
# to 0 over the two epochs) sees the unlabelled corpus alone, function words kept
# (--stopwords none), as the `wd-elmo` fold models of bench/loso.py did; the
# classifier trains on both labelled files' train split (never dev) with the
# n-gram path and class weighting zh-fast uses. --resume continues an
# interrupted pretraining and skips a finished one. Beside the biLM's vectors the
# BiLSTM reads a word embedding started from skip-gram vectors of the same corpus
# (function words kept, as the biLM read it): --embedder elmo+vocab.
set -euo pipefail
shared=${SHARED:-../shared/data}
python scripts/split_data.py "$shared/sentiment_train.tsv" "$shared/sentiment_extra.tsv" --out build/splits-all
sentiscore elmo pretrain "$shared/corpus/corpus.parquet" --out build/bilm/zh-small --size small --batch-size 64 \
  --learning-rate 2e-3 --stopwords none --max-vocab 50000 --epochs 2 --anneal-epochs 2 --seed 1 --resume
[ -f build/vectors/corpus-96-nostop/vectors.npy ] || sentiscore vectors train "$shared/corpus/corpus.parquet" \
  --out build/vectors/corpus-96-nostop --stopwords none
# The same vectors ship as built-in `zh-corpus-vectors`, the start for a team's own (vectors train --init).
rm -rf sentiscore/models/zh-corpus-vectors
cp -r build/vectors/corpus-96-nostop sentiscore/models/zh-corpus-vectors
sentiscore train build/splits-all/train.parquet --out build/models/zh-elmo --name zh-elmo \
  --dev build/splits-all/dev.parquet --arch wide-deep --embedder elmo+vocab --elmo-model build/bilm/zh-small \
  --vectors build/vectors/corpus-96-nostop --no-adapt-vectors \
  --stopwords none --class-weights none --epochs 4 --patience 1 --seed 13 \
  --wide-weighting idf --wide-buckets 1048576 --wide-c 8
rm -rf sentiscore/models/zh-elmo
cp -r build/models/zh-elmo sentiscore/models/zh-elmo
sentiscore info zh-elmo
