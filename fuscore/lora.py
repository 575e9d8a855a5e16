"""LoRA on FuScore's language model only, with peft.

The vision tower and the LM head stay frozen: the level rows of the LM head are the readout that the level-token
scoring relies on, and LoRA on the vision tower has not been shown to help level-token IQA (Q-Align trains it fully
or not at all). Targets are matched by a regular expression on the module path, so one config serves every base
family (`configuration_fuscore.BASE_FAMILIES`); per decoder layer it adapts:

- full attention (every layer of Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE, one layer in four of Qwen3.5):
  `self_attn.q_proj`, `k_proj`, `v_proj`, `o_proj`;
- Gated DeltaNet linear attention (the other three layers in four of Qwen3.5 and Qwen3.6): `linear_attn.in_proj_qkv`
  (queries, keys and values), `in_proj_z` (the output gate) and `out_proj`. Its `in_proj_a` and `in_proj_b` (decay
  and write strength, one output per value head: 32 for Qwen3.5-9B) are narrower than a LoRA rank and stay frozen,
  as do the convolution and the decay parameters (`A_log`, `dt_bias`);
- dense MLPs: `mlp.gate_proj`, `up_proj`, `down_proj`; in Qwen3.5-MoE the shared expert's
  (`mlp.shared_expert.gate_proj`, ...), which every token passes through.

The routed experts of the MoE families stay frozen, and so does the router (`mlp.gate`): the experts are fused 3-D
parameters (256 experts per layer in Qwen3.5-35B-A3B, 128 in Qwen3-VL-30B-A3B), so a LoRA on them would hold more
parameters than the rest together, and an adapted router would reroute tokens to experts never tuned for them. On
Qwen3-VL-MoE, which has no shared expert, LoRA therefore adapts the attention only.
"""

from peft import LoraConfig, PeftModel, get_peft_model

LANGUAGE_MODEL_LORA_TARGETS = (
    r".*model\.language_model\.layers\.\d+\.("
    r"self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    r"|linear_attn\.(in_proj_qkv|in_proj_z|out_proj)"
    r"|mlp\.(shared_expert\.)?(gate_proj|up_proj|down_proj))"
)


def language_model_lora_config(r: int = 64, alpha: int = 128, dropout: float = 0.05) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LANGUAGE_MODEL_LORA_TARGETS, bias="none")


def add_language_model_lora(model, r: int = 64, alpha: int = 128, dropout: float = 0.05) -> PeftModel:
    """Wraps a `FuScoreForQuality` with LoRA adapters on its language model; the processor stays attached. An
    artifact-map head (DESIGN.md section 10) is trained whole beside the adapters (peft's `modules_to_save`: it is
    saved with the adapter and merged back by `merge_and_unload`)."""
    processor = model.processor
    config = language_model_lora_config(r, alpha, dropout)
    if getattr(model, "artifact_head", None) is not None:
        config.modules_to_save = ["artifact_head"]
    peft_model = get_peft_model(model, config)
    peft_model.base_model.model.processor = processor
    return peft_model
