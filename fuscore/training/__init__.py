# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore training (DESIGN.md section 4): the pieces that `trainer_fuscore.py` wires into a `transformers.Trainer`.

What lives here: `config` (the model and data arguments and `FuScoreTrainingConfig`, a `TrainingArguments` in
trl's style), `collator` (rating-table rows to model inputs and the objective's labels; the synthetic scenes of the
endless stream), `sampling` (the pair-aware batch sampler and the stream's batch sampler; sharding between processes
is accelerate's alone), `answer_tokens` (the answer-prefix labels and their next-token NLL, for the peers'
cross-entropy on the answer), `loading` (the model, the rating tables and their checks, complete checkpoints to resume
from, the final folder written whole or not at all) and `trainer` (`FuScoreTrainer`, a thin subclass whose loss,
prediction and batches come from the objective's registry record). It builds on `fuscore.objectives` (the math),
the Hub layer (`modeling_fuscore`), `fuscore_data` (tables) and `fuscore_metrics` (metrics). The training script
`trainer_fuscore.py`, the benchmarks and tests import it; the Hub layer, `fuscore.objectives` and the scoring paths
never do.
"""
