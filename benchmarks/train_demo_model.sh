#!/usr/bin/env bash
# Reproduces the shipped demo checkpoint (fuscore/demo_model) on one GPU, in one command:
#   bash benchmarks/train_demo_model.sh
# Two stages of about 8 minutes each on an H100 (configs/demo_pretrain.yaml, configs/demo_pretrain_stage2.yaml; two
# because one command on the project's rented GPU may run 10 minutes), then the result replaces fuscore/demo_model.
set -euo pipefail
cd "$(dirname "$0")/.."
python trainer_fuscore.py --config configs/demo_pretrain.yaml
python trainer_fuscore.py --config configs/demo_pretrain_stage2.yaml
rm -rf fuscore/demo_model
cp -r outputs/demo_pretrain_stage2/final fuscore/demo_model
echo "fuscore/demo_model replaced; held-out metrics in fuscore/demo_model/fuscore_eval.json"
