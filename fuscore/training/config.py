# Copyright 2026 The FuScore authors. Apache-2.0.
"""The arguments of FuScore training: the model, the data, and one training config in trl's style
(`FuScoreTrainingConfig`, a `TrainingArguments` with the objective's options, as trl's `RewardConfig` is)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from transformers import TrainingArguments

from fuscore.hub import DEMO_MODEL
from fuscore.objectives import OBJECTIVE_REGISTRY, get_objective


PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
"""The embedded demo's config: what `python trainer_fuscore.py` runs, and the base of arguments given without
`--config` that name neither a model nor a table (a run that names one starts from the library's defaults)."""

_OBJECTIVE_HELP = "; ".join(f"{name}: {record.description.rstrip('.')}" for name, record in OBJECTIVE_REGISTRY.items())


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=str(DEMO_MODEL),
        metadata={"help": "A FuScore checkpoint (folder or Hub id), a Qwen-VL base checkpoint such as "
                          "Qwen/Qwen3-VL-8B-Instruct, or 'tiny:<family>[:<hidden>x<layers>]' for a random-init toy model."},
    )
    input_mode: str = field(default="fused", metadata={"help": "'fused' or 'fused_ir_vis' (for a new model from a base)."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    attn_implementation: Optional[str] = field(default=None, metadata={"help": "sdpa, flash_attention_2, eager."})
    use_lora: bool = field(default=False, metadata={"help": "LoRA on the language model only (peft)."})
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    min_pixels: Optional[int] = field(default=None, metadata={"help": "Image processor lower pixel bound (new models)."})
    max_pixels: Optional[int] = field(default=None, metadata={"help": "Image processor upper pixel bound (new models)."})


@dataclass
class DataArguments:
    train_table: str = field(
        default="synthetic",
        metadata={"help": "A rating table: a `save_to_disk` folder, an imagefolder folder with metadata.csv/jsonl, "
                          "or 'synthetic' (the embedded synthetic benchmark)."},
    )
    eval_table: Optional[str] = field(default=None, metadata={"help": "Held-out table; default: a scene-disjoint split of train_table."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Fraction of source pairs held out when eval_table is unset."})
    score_range: Optional[str] = field(default=None, metadata={"help": "'lo,hi' declared range of the table's scores (default: its min/max)."})
    dimension: str = field(default="overall", metadata={"help": "The rating prompt trained on."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic training scenes."})
    synthetic_eval_seed: int = field(default=1_000_003, metadata={"help": "Seed of the held-out synthetic scenes (never trained on)."})
    synthetic_train_scenes: int = 64
    synthetic_eval_scenes: int = 24
    synthetic_images_per_scene: int = 6
    synthetic_image_size: int = 112
    synthetic_stream: bool = field(default=False, metadata={"help": "Fresh synthetic scenes every step (needs max_steps)."})
    synthetic_local_artifacts: bool = field(default=False, metadata={
        "help": "The synthetic scenes carry localised artifacts (blocking, halo, noise, ghosting, saturation) and "
                "their masks as the map column `artifact_heatmap` (fuscore_data.synthetic.SyntheticIVIF's "
                "local_artifacts), so the artifact-map term has targets. Off: the synthetic benchmark without maps."})


@dataclass
class FuScoreTrainingConfig(TrainingArguments):
    r"""
    Configuration of [`FuScoreTrainer`]: the `TrainingArguments` plus FuScore's objective (DESIGN.md section 4).

    Parameters:
        objective (`str`, defaults to `"fuscore"`): a name in `fuscore.objectives.OBJECTIVE_REGISTRY`; its record
            decides the labels, the loss, the prediction, the regression head, the softmax and the batch layout.
        lambda_within (`float`, defaults to 1.0), lambda_cross (`float`, defaults to 0.5): weights of the Thurstone
            terms within and across source pairs.
        lambda_map (`float`, *optional*): weight of the artifact-map term `lambda_map L_map` (DESIGN.md section 10):
            the MSE between the map head's per-patch artifact probabilities and the table's map column
            (`artifact_heatmap`) pooled to the patch grid, rows without a map weighing 0. Unset: 1.0 when the
            training table has a map column, else 0. With a positive weight the model gets an artifact-map head
            (`add_artifact_head`, freshly initialised when the checkpoint has none); a positive weight on a table
            without a map column is an error. 0 turns the term off (a model with a head still logs its map metrics).
        map_head_only (`bool`, defaults to False): train the artifact-map head alone (every other parameter frozen),
            so the scores stay exactly the loaded model's; the other terms are still computed and logged.
        fixed_std (`bool`, defaults to False): Thurstone terms with sd = 1 instead of the predicted spread.
        sigma_min (`float`, defaults to 0.2): floor of the soft label's spread.
        pair_target_raters (`int`, *optional*): an option of ours, off by default: the Thurstone targets' spread is
            the MOS standard error `mos_std / sqrt(pair_target_raters)` instead of the soft label's spread
            (`fuscore.objectives.mos_standard_error`); every training row then needs `mos_std`.
        pairs_per_batch (`int`, defaults to 4), images_per_pair (`int`, defaults to 4): P source pairs x M fused
            images per batch and process.
        full_vocab_softmax (`bool`, defaults to False): the full-vocabulary softmax whatever the objective's own mode.
        compile_blocks (`bool`), uncheckpointed_layers (`int`), checkpointing_policy (`str`),
            activation_memory_budget (`float`): speed settings, see their help.
    """

    objective: str = field(default="fuscore", metadata={"help": f"The training objective. {_OBJECTIVE_HELP}"})
    lambda_within: float = field(default=1.0, metadata={"help": "Weight of the within-source-pair Thurstone term."})
    lambda_cross: float = field(default=0.5, metadata={"help": "Weight of the cross-source-pair Thurstone term."})
    lambda_map: Optional[float] = field(default=None, metadata={
        "help": "Weight of the artifact-map term (MSE of the map head's per-patch probabilities against the table's "
                "artifact_heatmap pooled to the patch grid). Unset: 1.0 when the training table has a map column, "
                "else 0. > 0 gives the model an artifact-map head; 0 turns the term off."})
    map_head_only: bool = field(default=False, metadata={
        "help": "Train the artifact-map head alone, every other parameter frozen: the model's scores stay exactly "
                "those of the loaded model (a map head added to a trained scorer). Needs a positive --lambda_map "
                "(or a table with maps); not with --use_lora."})
    fixed_std: bool = field(default=False, metadata={"help": "Thurstone terms with sd=1 instead of the predicted std."})
    sigma_min: float = field(default=0.2, metadata={"help": "Floor of the soft label's spread."})
    pair_target_raters: Optional[int] = field(default=None, metadata={
        "help": "Ours, off by default: the Thurstone targets' spread is the MOS standard error mos_std / "
                "sqrt(pair_target_raters) (the raters behind each MOS) instead of the soft label's spread."})
    pairs_per_batch: int = field(default=4, metadata={"help": "P: source pairs per batch (per process)."})
    images_per_pair: int = field(default=4, metadata={"help": "M: fused images of each source pair per batch."})
    full_vocab_softmax: bool = field(default=False, metadata={"help": "KL on the full-vocabulary softmax (DeQA-Score variant)."})
    compile_blocks: bool = field(default=False, metadata={
        "help": "torch.compile each decoder layer, and the vision blocks when the vision tower is frozen or not "
                "checkpointed (FuScoreForQuality.compile_blocks): fuses the norms, rotary embeddings and activations. "
                "Measured 1.8x samples/s for Qwen3-VL-8B LoRA with checkpointing on one H100 (41.6 against 23.5 "
                "eager, benchmarks/RESULTS_speed.md). Needs Triton on a GPU or a C++ compiler on the CPU; compiling "
                "took about 10-15 s on that H100."})
    uncheckpointed_layers: int = field(default=0, metadata={
        "help": "With --gradient_checkpointing: the last N decoder layers keep their activations instead of "
                "recomputing them in the backward pass (FuScoreForQuality.configure_checkpointing). Each layer left "
                "unchecked costs about 0.44 GiB for Qwen3-VL-8B at 16 images of 448 px and saves its recomputation; "
                "benchmarks/RESULTS_speed.md has the measured trade."})
    checkpointing_policy: Optional[str] = field(default=None, metadata={
        "help": "With --gradient_checkpointing: selective activation checkpointing of the checkpointed decoder "
                "layers (FuScoreForQuality.configure_checkpointing). 'mlp' keeps the outputs of the MLP's gate and up "
                "projections and recomputes the rest: for Qwen3-VL-8B at 16 images of 448 px about 0.17 GiB more per "
                "layer. With --compile_blocks the checkpoint runs inside each compiled layer. Unset: every "
                "checkpointed layer recomputes everything."})
    activation_memory_budget: Optional[float] = field(default=None, metadata={
        "help": "With --gradient_checkpointing and --compile_blocks: the checkpointed decoder layers skip "
                "torch.utils.checkpoint and the compiler decides what to recompute, keeping this fraction (0 to 1) of "
                "the activations it would save without checkpointing (0: recompute all it can; "
                "torch._functorch.config.activation_memory_budget). benchmarks/RESULTS_speed.md has the measured trade."})
    hub_adapter_only: bool = field(default=False, metadata={
        "help": "With --push_to_hub and --use_lora: push the LoRA adapter alone (peft's folder, with the card and the "
                "evaluation) instead of the merged model; its base is --model_name_or_path, which must then be a "
                "FuScore model's Hub repo id. The local final folder still holds the merged model."})
    remove_unused_columns: bool = False  # the collator needs the raw image and score columns

    def __post_init__(self):
        super().__post_init__()
        record = get_objective(self.objective)  # an unknown name fails here, listing the known ones
        if self.pair_target_raters is not None and self.pair_target_raters < 1:
            raise ValueError(f"--pair_target_raters {self.pair_target_raters}: must be at least 1 (raters per MOS).")
        if self.pair_target_raters is not None and "loss_within" not in record.terms:
            raise ValueError(f"--pair_target_raters applies to FuScore's Thurstone terms; objective "
                             f"{self.objective!r} has none (a peer's objective keeps its published targets).")
        if self.lambda_map is not None and not self.lambda_map >= 0:
            raise ValueError(f"--lambda_map {self.lambda_map}: must be 0 or more (0 turns the map term off).")
        if self.uncheckpointed_layers < 0:
            raise ValueError(f"--uncheckpointed_layers {self.uncheckpointed_layers}: must be 0 or more.")
        if self.uncheckpointed_layers and not self.gradient_checkpointing:
            raise ValueError("--uncheckpointed_layers needs --gradient_checkpointing: without checkpointing every "
                             "layer keeps its activations already.")
        if self.hub_adapter_only and not self.push_to_hub:
            raise ValueError("--hub_adapter_only needs --push_to_hub: it chooses what the push uploads.")
        from modeling_fuscore import check_checkpointing_settings

        if self.checkpointing_policy is not None and not self.gradient_checkpointing:
            raise ValueError("--checkpointing_policy needs --gradient_checkpointing: it chooses what checkpointing saves.")
        if self.activation_memory_budget is not None and not (self.gradient_checkpointing and self.compile_blocks):
            raise ValueError("--activation_memory_budget needs --gradient_checkpointing and --compile_blocks: it hands "
                             "the checkpointed layers' recomputation to the compiler.")
        check_checkpointing_settings(self.checkpointing_policy, self.activation_memory_budget,
                                     names=("--checkpointing_policy", "--activation_memory_budget"))
