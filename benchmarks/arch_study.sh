#!/usr/bin/env bash
# The measurement behind the default CNN: candidate architectures trained the same way on the same
# 20,000 images for 3 epochs (no augmentation), validation accuracy and seconds per epoch.
# Run from the repository root: bash benchmarks/arch_study.sh  (about 10 minutes on 2 cores)
set -euo pipefail
out=${1:-runs/arch_study}
mkdir -p "$out"
for arch in mlp cnn5 cnn; do
  .venv/bin/digitlab train --arch "$arch" --epochs 3 --limit 20000 --seed 0 --no-progress --json \
    --out "$out/$arch.npz" 2>/dev/null | tail -n 1 | tee "$out/$arch.json"
done
