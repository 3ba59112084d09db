#!/usr/bin/env bash
# Reproduce the shipped default model zh-fast (about 10-15 minutes on 2 cores):
#   bash scripts/build_default_model.sh [../shared/data/sentiment_train.tsv]
set -euo pipefail
data=${1:-../shared/data/sentiment_train.tsv}
python scripts/split_data.py "$data" build/splits
sentiscore train build/splits/train.parquet --out build/models/zh-fast --name zh-fast \
  --dev build/splits/dev.parquet --arch wide-deep --epochs 6 --seed 13
rm -rf sentiscore/models/zh-fast
cp -r build/models/zh-fast sentiscore/models/zh-fast
sentiscore info zh-fast
