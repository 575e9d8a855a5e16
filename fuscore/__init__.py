# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore's library: everything that is not Hub remote code (DESIGN.md section 5).

The Hub layer (the top-level `configuration_fuscore`, `modeling_fuscore`, `acceleration_fuscore`, `float8_fuscore`,
`processing_fuscore`, `image_utils_fuscore`, `scoring_fuscore`, `comparison_fuscore`, `attribution_fuscore`,
`pipeline_fuscore` files) is what a saved model folder carries and must run where FuScore is not installed, so it never imports this package. This package
builds on it: `objectives/` (the registry of training objectives with their soft labels and losses, DESIGN sections
3-4), `training/` (the trainer's config, collator, samplers, loading and the `FuScoreTrainer` subclass that
`trainer_fuscore.py` runs), `sources` (what is scored: image files and folders, manifests and datasets as items, the
benchmark readers), `scoring_job` (sharded, resumable scoring of whole datasets, section 8) with `model_identity` (the
model revision a job records), `reward`, `fusion_net` and `reward_finetune` (FuScore as a reward for fusion networks,
section 7), `pairwise` (Davidson's tie-aware Bradley-Terry), `ranking` and `cli` (the `fuscore` command), `export`,
`hub`, `model_card` and `eval_results` (Hub-ready folders), `atomic` (the one whole-or-absent writer every file and
folder goes through), `lora` and `tiny` (LoRA on the language model; tiny random-init models for tests). It may import
the Hub layer, `fuscore_data` (data/) and `fuscore_metrics` (evaluate_metrics/); those two import only `fuscore.atomic`
from here. Nothing is imported at package level: import the submodules.
"""
