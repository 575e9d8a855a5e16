# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore training (DESIGN.md section 4): the pieces that `trainer_fuscore.py` wires into a `transformers.Trainer`.

What lives here: `sampling` (the pair-aware batch sampler, the random batch sampler of the peers' objectives and the
synthetic stream's batch sampler; sharding between processes is accelerate's alone) and `answer_tokens` (the
answer-prefix labels and their next-token NLL, for the peers' cross-entropy on the answer).
"""
