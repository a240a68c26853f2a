#!/usr/bin/env bash
# Reproduces the three committed models end to end (train -> evaluate -> export -> verify, and
# the int8 variant); each MNIST model's accuracy on tests/fixtures/drawings lands in model.json.
# Usage: scripts/train_shipped_models.sh [MNIST_DIR] [FASHION_MNIST_DIR]
set -euo pipefail
mnist_dir=${1:-../shared/data/mnist}
fashion_dir=${2:-/usr/share/datasets/fashion-mnist}
# Drawing-like augmentation (stroke width, elastic, rotation/zoom/shift), 40 epochs on a cosine
# learning-rate schedule, best validation epoch kept: 99.60 % on MNIST test, about 18 min here.
python -m training all --name mnist-deep-cnn --dataset mnist --data "$mnist_dir" \
  --architecture deep_cnn --epochs 40 --batch-size 128 --learning-rate 1e-3 --augment drawings \
  --lr-schedule cosine --early-stopping-patience 40 --seed 42 --force
python -m training all --name fashion-deep-cnn --dataset fashion_mnist --data "$fashion_dir" \
  --architecture deep_cnn --epochs 30 --batch-size 128 --learning-rate 1e-3 \
  --early-stopping-patience 5 --seed 42 --force
python -m training quantize --name mnist-deep-cnn --dataset mnist --data "$mnist_dir" --force
