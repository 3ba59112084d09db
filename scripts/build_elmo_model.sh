#!/usr/bin/env bash
# Reproduce the shipped zh-elmo model (on 2 busy CPU cores: 37 minutes for one
# epoch of biLM pretraining, then ~15 minutes for the classifier):
#   bash scripts/build_elmo_model.sh [../shared/data/sentiment_train.tsv]
# The biLM sees only the training split's texts (never dev); its labels are ignored.
set -euo pipefail
data=${1:-../shared/data/sentiment_train.tsv}
[ -f build/splits/train.parquet ] || python scripts/split_data.py "$data" --out build/splits
sentiscore elmo pretrain build/splits/train.parquet --out build/elmo/zh-small --size small --epochs 1 --seed 1 --threads 1 --workers 1 --resume
sentiscore train build/splits/train.parquet --out build/models/zh-elmo --name zh-elmo \
  --dev build/splits/dev.parquet --embedder elmo --elmo-model build/elmo/zh-small --layer-mix scalar \
  --arch wide-deep --epochs 8 --seed 13 --workers 1
rm -rf sentiscore/models/zh-elmo
cp -r build/models/zh-elmo sentiscore/models/zh-elmo
sentiscore info zh-elmo
