# Copyright 2026 The FuScore authors. Apache-2.0.
"""The answer-prefix tokens of the rating prompt, for the peers' next-token cross-entropy on the answer.

Q-Align and DeQA-Score train their answer "The quality of the image is <level>." with the language-modelling loss
(DeQA-Score replaces the level word's term by its KL and keeps the others). FuScore's prompt ends with its answer
prefix ("The overall quality of the fused image is") and the model reads the level at the last prefix token, so the
faithful counterpart of that loss is the next-token NLL of the answer-prefix tokens, teacher-forced, under the
full-vocabulary softmax: position `t` of the prefix predicts token `t + 1`, the first prefix token being predicted
from the end of the assistant header. The period and end-of-turn that follow the level word in the peers' answers
never reach FuScore's model and have no counterpart.

* `answer_token_labels` (collator side): `[B, T]` labels, the token id on the answer-prefix positions and -100
  elsewhere (the `labels` convention of transformers' causal LMs, shifted in the loss).
* `capture_last_hidden_state` and `answer_token_nll` (loss side): the base model's last hidden state of the same
  forward pass, and per row the summed NLL of its answer-prefix tokens and their number, with the LM head applied to
  those positions only (never to the whole sequence).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F


__all__ = ["IGNORE_INDEX", "answer_prefix_ids", "answer_token_labels", "capture_last_hidden_state", "answer_token_nll"]

IGNORE_INDEX = -100


def answer_prefix_ids(processor, dimension: str) -> list[int]:
    """Token ids of the answer prefix of `dimension`'s prompt, as the processor's tokenizer encodes it alone."""
    if dimension not in processor.prompts:
        known = ", ".join(processor.prompts)
        raise ValueError(f"Unknown rating dimension {dimension!r}; the processor knows: {known}.")
    return list(processor.tokenizer(processor.prompts[dimension]["answer"], add_special_tokens=False)["input_ids"])


def answer_token_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        answer_ids: Sequence[int]) -> torch.Tensor:
    """`[B, T]` long labels: `input_ids` on each row's answer-prefix tokens (its last `len(answer_ids)` real tokens),
    `IGNORE_INDEX` elsewhere.

    Raises:
        ValueError: a row does not end with `answer_ids` (a prompt whose answer prefix tokenises differently in
            context), naming the row.
    """
    count = len(answer_ids)
    if count == 0:
        raise ValueError("The answer prefix is empty: there is no answer token to train on.")
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    expected = torch.as_tensor(list(answer_ids), dtype=input_ids.dtype)
    lengths = attention_mask.sum(-1).tolist()
    for row, length in enumerate(lengths):
        # The collator pads on the right, so a row's real tokens are its first `length`.
        tail = input_ids[row, length - count : length]
        if length < count or not torch.equal(tail, expected):
            raise ValueError(f"Row {row} of the batch does not end with the answer prefix's tokens {list(answer_ids)} "
                             f"(it ends with {input_ids[row, max(length - count, 0) : length].tolist()}).")
        labels[row, length - count : length] = tail
    return labels


@contextmanager
def capture_last_hidden_state(fuscore_model) -> Iterator[dict]:
    """Within the block, `captured["hidden_states"]` is the base model's last hidden state `[B, T, H]` of the latest
    forward pass of `fuscore_model` (a `FuScoreForQuality`), with its graph: a forward hook on `fuscore_model.model`."""
    captured: dict = {}

    def hook(module, args, output):
        captured["hidden_states"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = fuscore_model.model.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def answer_token_nll(fuscore_model, hidden_states: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the summed next-token NLL of its labelled tokens and their number, `(nll_sum, count)`, both `[B]`.

    Position `t` predicts `labels[:, t + 1]`; only positions with a label go through the LM head (full vocabulary,
    float32 log-softmax). Under FSDP2 the sharded head weight is gathered, as the model's forward does for the level
    rows.
    """
    targets = labels[:, 1:].to(hidden_states.device)
    rows, columns = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    weight = fuscore_model.lm_head.weight
    if hasattr(weight, "full_tensor"):
        weight = weight.full_tensor()
    selected = hidden_states[:, :-1][rows, columns]
    logits = F.linear(selected, weight.to(selected.dtype)).float()
    nll = F.cross_entropy(logits, targets[rows, columns], reduction="none")
    nll_sum = torch.zeros(labels.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
    count = (targets != IGNORE_INDEX).sum(-1)
    return nll_sum, count
