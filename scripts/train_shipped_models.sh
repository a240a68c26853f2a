#!/usr/bin/env bash
# Reproduces the two committed models end to end (train -> evaluate -> export -> verify).
# Usage: scripts/train_shipped_models.sh [MNIST_DIR] [FASHION_MNIST_DIR]
set -euo pipefail
mnist_dir=${1:-../shared/data/mnist}
fashion_dir=${2:-/usr/share/datasets/fashion-mnist}
python -m training all --name mnist-deep-cnn --dataset mnist --data "$mnist_dir" \
  --architecture deep_cnn --epochs 30 --batch-size 128 --learning-rate 1e-3 --augment \
  --early-stopping-patience 6 --seed 42
python -m training all --name fashion-deep-cnn --dataset fashion_mnist --data "$fashion_dir" \
  --architecture deep_cnn --epochs 30 --batch-size 128 --learning-rate 1e-3 \
  --early-stopping-patience 5 --seed 42
python -m training quantize --name mnist-deep-cnn --dataset mnist --data "$mnist_dir"
