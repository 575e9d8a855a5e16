# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore configuration and the facts every part of FuScore shares.

This file is Hub remote code (`AutoConfig.from_pretrained(..., trust_remote_code=True)`): it imports only the
standard library and transformers. Everything that more than one part of FuScore needs to agree on is defined here
once: the level words and their values (one order, best first, as the model reads them), the rating dimensions, the
built-in prompts, the input modes, the level-word check and the dimension check. The library (`fuscore/`), the data
package and the command line import these names from here.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from transformers import PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging


logger = logging.get_logger(__name__)



@dataclass(frozen=True)
class ChatFormat:
    """The parts of a base family's chat template that a one-turn rating prompt meets (`FuScoreProcessor.build_prompt`).

    Args:
        system_turn: what the template writes before the user turn of a conversation that has no system message.
        assistant_prefix: what it writes after `<|im_start|>assistant\n` for the generation prompt, with thinking off
            (`enable_thinking=False`) where the template has the switch.
    """

    system_turn: str = ""
    assistant_prefix: str = ""

    def to_dict(self) -> dict:
        return {"system_turn": self.system_turn, "assistant_prefix": self.assistant_prefix}


@dataclass(frozen=True)
class BaseFamily:
    """What FuScore needs to know about one supported base family; the one place where families differ."""

    model_type: str
    name: str
    example: str
    chat_format: ChatFormat
    # Whether `compile="auto"` may compile the blocks (`scoring_fuscore.compile_pays`). Qwen3.5's may not: compiling
    # the 2B architecture's blocks took 248 s on one H100 for 3.6% more samples/s at 448 px, and the 9B's had not
    # finished after 150 s (benchmarks/RESULTS_speed.md); `compile=True` still compiles them.
    compile_may_pay: bool = True


# Qwen2-VL and Qwen2.5-VL open a conversation without a system message with a default one, and FuScore keeps it: the
# prompt is then exactly what `apply_chat_template` gives, the conversations these bases were tuned on (tested
# against their templates in tests/test_chat_templates.py). Qwen3.5 and Qwen3.6 think by default; FuScore reads the
# answer straight away, so its prompt is the template's with thinking off: an empty think block opens the turn.
_QWEN2_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
_NO_THINKING = "<think>\n\n</think>\n\n"
BASE_FAMILIES = {family.model_type: family for family in (
    BaseFamily("qwen2_vl", "Qwen2-VL", "Qwen/Qwen2-VL-7B-Instruct", ChatFormat(system_turn=_QWEN2_SYSTEM)),
    BaseFamily("qwen2_5_vl", "Qwen2.5-VL", "Qwen/Qwen2.5-VL-7B-Instruct", ChatFormat(system_turn=_QWEN2_SYSTEM)),
    BaseFamily("qwen3_vl", "Qwen3-VL", "Qwen/Qwen3-VL-8B-Instruct", ChatFormat()),
    BaseFamily("qwen3_vl_moe", "Qwen3-VL-MoE", "Qwen/Qwen3-VL-30B-A3B-Instruct", ChatFormat()),
    BaseFamily("qwen3_5", "Qwen3.5 / Qwen3.6", "Qwen/Qwen3.5-9B", ChatFormat(assistant_prefix=_NO_THINKING),
               compile_may_pay=False),
    BaseFamily("qwen3_5_moe", "Qwen3.5-MoE / Qwen3.6-MoE", "Qwen/Qwen3.5-35B-A3B",
               ChatFormat(assistant_prefix=_NO_THINKING), compile_may_pay=False),
)}
SUPPORTED_BASE_MODEL_TYPES = tuple(BASE_FAMILIES)
# Folders saved before the chat format was recorded: their prompts had no system turn and no think block.
LEGACY_CHAT_FORMAT = ChatFormat()


def chat_format(model_type: str) -> ChatFormat:
    """The chat format of a supported base family (`BASE_FAMILIES`)."""
    if model_type not in BASE_FAMILIES:
        raise ValueError(f"FuScore wraps {', '.join(SUPPORTED_BASE_MODEL_TYPES)} models; got {model_type!r}.")
    return BASE_FAMILIES[model_type].chat_format

# The rating levels, best first: the order of `level_words`, `level_values`, the model's level logits and the
# probabilities every score reports.
LEVELS = (("excellent", 5.0), ("good", 4.0), ("fair", 3.0), ("poor", 2.0), ("bad", 1.0))
DEFAULT_LEVEL_WORDS = tuple(word for word, _ in LEVELS)
DEFAULT_LEVEL_VALUES = tuple(value for _, value in LEVELS)

# The four IVIF sub-dimensions (higher is better for all four: "artifacts" rates their absence) and the overall one.
OVERALL = "overall"
SUB_DIMENSIONS = ("thermal_retention", "texture_preservation", "artifacts", "sharpness")
DIMENSIONS = (OVERALL,) + SUB_DIMENSIONS

# "fused": the fused image alone; "fused_ir_vis": the fused image, then its infrared and visible sources.
INPUT_MODES = ("fused", "fused_ir_vis")

_SOURCES_NOTE = "The first image is the fused result, the second its infrared source and the third its visible source. "
DEFAULT_PROMPTS = {
    "overall": {
        "question": "How would you rate the overall quality of this infrared-visible fused image?",
        "answer": "The overall quality of the fused image is",
    },
    "thermal_retention": {
        "question": "How well does this fused image keep the thermal targets and intensities of the infrared image?",
        "answer": "The thermal retention of the fused image is",
    },
    "texture_preservation": {
        "question": "How well does this fused image preserve the textures and details of the visible image?",
        "answer": "The texture preservation of the fused image is",
    },
    "artifacts": {
        "question": "How free is this fused image of artifacts such as noise, halos, ringing and blocking?",
        "answer": "The freedom from artifacts of the fused image is",
    },
    "sharpness": {
        "question": "How sharp are the edges and structures of this fused image?",
        "answer": "The sharpness of the fused image is",
    },
}


def check_input_mode(input_mode: str) -> str:
    if input_mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}.")
    return input_mode


def default_prompts(input_mode: str = "fused") -> dict:
    """The built-in prompt templates; with the sources, the question says which image is which."""
    prefix = _SOURCES_NOTE if check_input_mode(input_mode) == "fused_ir_vis" else ""
    return {dim: {"question": prefix + p["question"], "answer": p["answer"]} for dim, p in DEFAULT_PROMPTS.items()}


def resolve_level_token_ids(tokenizer, level_words: Sequence[str]) -> list:
    """Token id of each level word in its leading-space form (" excellent"), as it follows the answer prefix.

    Raises:
        ValueError: a word is not a single token for this tokenizer, or two words share a token.
    """
    token_ids = []
    for word in level_words:
        pieces = tokenizer.encode(" " + word, add_special_tokens=False)
        if len(pieces) != 1:
            shown = [tokenizer.convert_ids_to_tokens(piece) for piece in pieces]
            raise ValueError(
                f"Level word {word!r} is {len(pieces)} tokens {shown} for this tokenizer in its leading-space form "
                f"{' ' + word!r}. FuScore reads one logit per level, so each level word must be a single token: "
                "choose words the tokenizer keeps whole (the defaults excellent/good/fair/poor/bad are single "
                "tokens for every Qwen-VL tokenizer)."
            )
        token_ids.append(pieces[0])
    if len(set(token_ids)) != len(token_ids):
        raise ValueError(f"Level words {list(level_words)} map to repeated token ids {token_ids}.")
    return token_ids


class LevelWordsError(ValueError):
    """A config's `level_words` are not the words its `level_token_ids` read (config.json edited by hand)."""


def check_level_token_ids(config, tokenizer) -> None:
    """`config.level_words` must be the words that `config.level_token_ids` read with `tokenizer`: the scores come
    from the ids, so a config.json whose words were edited alone would score with the old words while everything
    that reports the words (output metadata, cards) named the new ones. Nothing to check without ids or tokenizer.

    Raises:
        LevelWordsError: the words and ids disagree, or a word is not a single token.
    """
    token_ids = list(getattr(config, "level_token_ids", None) or [])
    if tokenizer is None or not token_ids:
        return
    words = list(config.level_words)
    where = f"{config._name_or_path}/config.json" if getattr(config, "_name_or_path", "") else "The model's config"
    fix = ("To change the level words, call model.set_level_words(tokenizer, words) and save the model with "
           "save_pretrained; do not edit level_words in config.json alone.")
    try:
        expected = resolve_level_token_ids(tokenizer, words)
    except ValueError as error:
        raise LevelWordsError(f"{where}: level_words {words}: {error} {fix}") from None
    if expected != token_ids:
        read = [tokenizer.decode([token]).strip() for token in token_ids]
        raise LevelWordsError(f"{where} lists level_words {words}, but its level_token_ids {token_ids} read the "
                              f"words {read}, so the scores would come from those. {fix}")


def resolve_dimensions(dimensions: Union[str, Iterable, None], known: Iterable[str], argument: str = "dimensions") -> list:
    """The one check of requested rating dimensions against the ones a model has prompts for.

    Args:
        dimensions: one name, several names (any iterable of strings), or `"all"` / `None` for every known one.
        known: the dimensions the model knows (its processor's prompts).
        argument: how the caller's argument is called in error messages (`"--dimensions"` on the command line).

    Returns:
        The requested names, each once, in the order asked; for `"all"` FuScore's dimensions in their usual order
        (`DIMENSIONS`), then any custom ones in the model's order.

    Raises:
        ValueError: nothing requested, a name the model has no prompt for, or a name that is not a string.
    """
    known = list(known)
    ordered_known = [name for name in DIMENSIONS if name in known] + [name for name in known if name not in DIMENSIONS]
    if dimensions is None or (isinstance(dimensions, str) and dimensions == "all"):
        if not ordered_known:
            raise ValueError("This model has no rating prompts, so it knows no dimension to score.")
        return ordered_known
    if isinstance(dimensions, str):
        requested = [dimensions]
    elif isinstance(dimensions, Iterable) and not isinstance(dimensions, (bytes, dict)):
        requested = list(dimensions)
    else:
        raise ValueError(f"{argument} must be a dimension name or a list of names, got {type(dimensions).__name__}.")
    not_names = [name for name in requested if not isinstance(name, str)]
    if not_names:
        raise ValueError(f"{argument} must hold dimension names (strings); got {not_names!r}.")
    if not requested:
        raise ValueError(f"{argument} is empty; name at least one of: {', '.join(ordered_known)} (or 'all').")
    unknown = [name for name in requested if name not in known]
    if unknown:
        shown = unknown[0] if len(unknown) == 1 else unknown
        raise ValueError(f"Unknown rating dimension {shown!r} in {argument}; this model knows: "
                         f"{', '.join(ordered_known) or 'none'} (or 'all').")
    return list(dict.fromkeys(requested))


class FuScoreConfig(PreTrainedConfig):
    r"""
    Configuration of [`FuScoreForQuality`].

    The prompts and the input mode (which images the model reads) are the processor's: they are saved in
    `processor_config.json` by [`FuScoreProcessor`], not here.

    Args:
        base_config (`dict` or `PreTrainedConfig`):
            The base model's configuration (a `model_type` of `SUPPORTED_BASE_MODEL_TYPES`).
        level_words (`list[str]`, defaults to `["excellent", "good", "fair", "poor", "bad"]`):
            The rating words read at the answer position, each a single token in its leading-space form.
        level_values (`list[float]`, defaults to `[5, 4, 3, 2, 1]`):
            The value of each level word; the score is the expectation of these under the level distribution.
        level_token_ids (`list[int]`, *optional*):
            Token ids of the level words, resolved from the tokenizer when the model is built.
        regression_head (`bool`, defaults to `False`):
            Adds a linear regression head on the answer-position hidden state (the `scalar` training baseline).
        artifact_map (`bool`, defaults to `False`):
            Adds the artifact map head (`FuScoreArtifactHead`): one artifact probability per merged patch of each
            row's fused image, read from the language model's final hidden states at that image's visual tokens
            (DESIGN.md section 10). Folders saved before it existed load as `False` (no head, no maps).
        packed_vision_attention (`bool`, defaults to `True`):
            Where the vision tower runs under sdpa, attend all images of a batch in one call instead of a Python
            loop over images (see `packed_vision_attention`). Scores are unchanged up to floating-point rounding.
    """

    model_type = "fuscore"

    base_config: Union[dict, PreTrainedConfig, None] = None
    level_words: Optional[list] = None
    level_values: Optional[list] = None
    level_token_ids: Optional[list] = None
    regression_head: bool = False
    artifact_map: bool = False
    packed_vision_attention: bool = True

    def __post_init__(self, **kwargs):
        # Folders saved before the processor became the one home of the prompts and the input mode carry a copy of
        # both in config.json; the processor's copy (processor_config.json) is the one that was always used.
        for legacy in ("prompts", "input_mode"):
            if kwargs.pop(legacy, None) is not None:
                logger.info("config.json's %r is ignored: FuScoreProcessor holds it (processor_config.json).", legacy)
        if isinstance(self.base_config, dict):
            model_type = self.base_config.get("model_type")
            if model_type not in SUPPORTED_BASE_MODEL_TYPES:
                raise ValueError(
                    f"FuScore wraps a Qwen-VL model ({', '.join(SUPPORTED_BASE_MODEL_TYPES)}); the base config has "
                    f"model_type={model_type!r}."
                )
            self.base_config = CONFIG_MAPPING[model_type](**{k: v for k, v in self.base_config.items() if k != "model_type"})
        if self.base_config is not None and self.base_config.model_type not in SUPPORTED_BASE_MODEL_TYPES:
            raise ValueError(
                f"FuScore wraps a Qwen-VL model ({', '.join(SUPPORTED_BASE_MODEL_TYPES)}); got a "
                f"{self.base_config.model_type!r} model. Use e.g. Qwen/Qwen3-VL-8B-Instruct."
            )
        self.level_words = list(self.level_words or DEFAULT_LEVEL_WORDS)
        self.level_values = [float(value) for value in (self.level_values or DEFAULT_LEVEL_VALUES)]
        if len(self.level_words) != len(self.level_values):
            raise ValueError(f"{len(self.level_words)} level words but {len(self.level_values)} level values.")
        if self.level_token_ids is not None and len(self.level_token_ids) != len(self.level_words):
            raise ValueError(f"{len(self.level_words)} level words but {len(self.level_token_ids)} level token ids.")
        if self.base_config is not None:
            # The LM head is tied to the input embeddings exactly when the base model ties them.
            kwargs.setdefault("tie_word_embeddings", bool(getattr(self.base_config, "tie_word_embeddings", False)))
        super().__post_init__(**kwargs)

    def get_text_config(self, *args, **kwargs):
        return self.base_config.get_text_config(*args, **kwargs)


FuScoreConfig.register_for_auto_class()

__all__ = [
    "BASE_FAMILIES", "BaseFamily", "ChatFormat", "LEGACY_CHAT_FORMAT", "chat_format",
    "DEFAULT_LEVEL_VALUES", "DEFAULT_LEVEL_WORDS", "DEFAULT_PROMPTS", "DIMENSIONS", "FuScoreConfig", "INPUT_MODES",
    "LEVELS", "OVERALL", "SUB_DIMENSIONS", "SUPPORTED_BASE_MODEL_TYPES", "check_input_mode", "default_prompts",
    "resolve_dimensions", "resolve_level_token_ids", "LevelWordsError", "check_level_token_ids",
]
