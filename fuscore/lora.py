"""LoRA on FuScore's language model only, with peft.

The vision tower and the LM head stay frozen: the level rows of the LM head are the readout that the level-token
scoring relies on, and LoRA on the vision tower has not been shown to help level-token IQA (Q-Align trains it fully
or not at all). Targets are matched by a regular expression on the module path, so the same config serves the three
Qwen-VL families.
"""

from peft import LoraConfig, PeftModel, get_peft_model

# Attention and MLP projections of every decoder layer of the language model, nothing else.
LANGUAGE_MODEL_LORA_TARGETS = r".*model\.language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"


def language_model_lora_config(r: int = 64, alpha: int = 128, dropout: float = 0.05) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LANGUAGE_MODEL_LORA_TARGETS, bias="none")


def add_language_model_lora(model, r: int = 64, alpha: int = 128, dropout: float = 0.05) -> PeftModel:
    """Wraps a `FuScoreForQuality` with LoRA adapters on its language model; the processor stays attached."""
    processor = model.processor
    peft_model = get_peft_model(model, language_model_lora_config(r, alpha, dropout))
    peft_model.base_model.model.processor = processor
    return peft_model
