"""The real Qwen tokenizer, rebuilt offline from the Qwen BPE ranks that the `dashscope` wheel ships.

No model repo can be downloaded here, but the 151,643 byte-level BPE ranks shared by Qwen2, Qwen2.5 and Qwen3 (and
so by Qwen2-VL, Qwen2.5-VL and Qwen3-VL) are on PyPI inside `dashscope` (`dashscope/resources/qwen.tiktoken`,
Apache-2.0; a dev dependency). This module turns them into a transformers `Qwen2Tokenizer` the way the Qwen repos'
tokenizers are made: the ranks as vocabulary and merges (transformers' tiktoken converter), Qwen2's NFC normaliser
and pre-tokenizer regex, the special tokens at their real ids (151643 on) and each family's chat template.

Only the tool-free part of the chat templates is written here (system, user and assistant turns with images and
text, the generation prompt), which is all a rating prompt uses.
"""

import base64
import functools
import importlib.metadata
from pathlib import Path

from transformers import AddedToken, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import TikTokenConverter


RANKS_FILE = "dashscope/resources/qwen.tiktoken"
NUM_RANKS = 151_643
# Qwen2's pre-tokenizer: like cl100k's, but digits split one by one.
QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Added tokens after the ranks, in id order from 151643, as each family's tokenizer has them: (content, special).
QWEN2_VL_ADDED = [(token, True) for token in (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>")]
QWEN2_5_VL_ADDED = QWEN2_VL_ADDED + [("<tool_call>", False), ("</tool_call>", False)] + [(token, True) for token in (
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")]
QWEN3_VL_ADDED = QWEN2_5_VL_ADDED + [(token, False) for token in (
    "<tool_response>", "</tool_response>", "<think>", "</think>")]
ADDED_TOKENS = {"qwen2_vl": QWEN2_VL_ADDED, "qwen2_5_vl": QWEN2_5_VL_ADDED, "qwen3_vl": QWEN3_VL_ADDED}

# One user/assistant/system turn: a string, or a list of {"type": "image"|"video"|"text"} parts. Every output is a
# `{{- ... }}` expression, so the `{%- %}` tags strip only the template's own layout, never a newline of the prompt.
_TURN = (
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}{{- 'Picture ' ~ image_count.value ~ ': ' }}{%- endif %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}{{- 'Video ' ~ video_count.value ~ ': ' }}{%- endif %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part %}{{- part['text'] }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
)
_COUNTERS = "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
_GENERATION = "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
# Qwen2-VL and Qwen2.5-VL open every conversation that has no system turn with a default one; Qwen3-VL does not.
QWEN2_VL_CHAT_TEMPLATE = (
    _COUNTERS + "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    + _TURN + "{%- endfor %}" + _GENERATION
)
QWEN3_VL_CHAT_TEMPLATE = _COUNTERS + "{%- for message in messages %}" + _TURN + "{%- endfor %}" + _GENERATION
CHAT_TEMPLATES = {"qwen2_vl": QWEN2_VL_CHAT_TEMPLATE, "qwen2_5_vl": QWEN2_VL_CHAT_TEMPLATE,
                  "qwen3_vl": QWEN3_VL_CHAT_TEMPLATE}


def ranks_path() -> Path:
    """The Qwen BPE ranks inside the installed `dashscope` wheel (located from its metadata, never imported)."""
    try:
        path = Path(importlib.metadata.distribution("dashscope").locate_file(RANKS_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("dashscope is not installed: pip install -e '.[dev]' (it ships the Qwen BPE ranks)") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: this dashscope version does not ship the Qwen BPE ranks; install the "
                                "version pinned in pyproject.toml's dev extra.")
    return path


def read_ranks(path) -> dict:
    """A tiktoken ranks file: one `base64(token bytes) rank` per line."""
    with open(path, "rb") as handle:
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in handle if line.strip())}


class _RanksConverter(TikTokenConverter):
    """transformers' tiktoken converter, reading the ranks file itself (so the `tiktoken` package is not needed)."""

    load_tiktoken_bpe = staticmethod(read_ranks)


@functools.lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple:
    """The ranks as a byte-level vocabulary and BPE merges (transformers' tiktoken converter does the work)."""
    path = str(ranks_path())
    vocab, merges = _RanksConverter(vocab_file=path, pattern=QWEN_PATTERN).extract_vocab_merges_from_model(path)
    if len(vocab) != NUM_RANKS:
        raise ValueError(f"{ranks_path()}: {len(vocab)} ranks, expected {NUM_RANKS}.")
    return vocab, merges


def build_qwen_tokenizer(family: str = "qwen3_vl") -> Qwen2Tokenizer:
    """The real-vocabulary tokenizer of a Qwen-VL family, with its added tokens at their real ids and its chat template.

    Qwen2Tokenizer brings the NFC normaliser, the Qwen2 pre-tokenizer regex (the same pattern as QWEN_PATTERN) and the
    byte-level decoder.
    """
    vocab, merges = _vocab_and_merges()
    # No special tokens at construction (they would be appended in construction order): added below in id order.
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), unk_token=None, eos_token=None, pad_token=None,
                               model_max_length=32768, chat_template=CHAT_TEMPLATES[family])
    added = ADDED_TOKENS[family]
    tokenizer.add_tokens([AddedToken(content, special=special, normalized=False) for content, special in added])
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    tokenizer.extra_special_tokens = [content for content, special in added
                                      if special and content not in ("<|endoftext|>", "<|im_end|>")]
    return tokenizer
