"""Scoring speed of the Qwen3.5 backbones (issue 28): the engine against the plain batched forward, with and without
flash-linear-attention's Gated DeltaNet kernels.

    python benchmarks/bench_backbones.py --output results.json    # one H100/H200, about 8 minutes
    python benchmarks/bench_backbones.py --tiny                    # on a CPU: the code paths, a minute

Architectures at random init, bf16, sdpa (throughput does not depend on the weights), with the dimensions of the
public config.json files written below (`ARCHITECTURES`): Qwen3.5-2B and Qwen3.5-9B (dense: three Gated DeltaNet
layers to one full-attention layer), and the Qwen3.5-35B-A3B MoE (256 experts, 8 per token), which is scored only if
its ~70 GB of bf16 weights fit the GPU (else its row says so). Per architecture and kernel variant, rows:

  * engine-448: `model.score(...)` on `--images` 448x448 JPEGs, eager (`compile=False`);
  * engine-448-compiled: the same after `compile_blocks` (its compile time reported apart, `compile_seconds`);
  * plain-448: the base model's own batched forward (`logits_to_keep=1`, left-padded, processor serial in the loop,
    batches in input order), as a script over a folder would run it;
  * engine-mix and plain-mix: the same two on the mixed IVIF sizes of `bench_mixed_sizes.py` (`MIX`: VIFB's own
    fused images, MSRS, M3FD and LLVIP sizes; native sizes within [128^2, 1280^2] pixels). engine-mix is the
    engine's first pass over these sizes (its batches have shapes not seen before; plain-mix runs after it);
    engine-mix-again and plain-mix-again are second passes over the same images, so first and second passes tell
    one-time costs (kernel autotuning for new shapes, which `TRITON_PRINT_AUTOTUNING=1` lists) from steady
    throughput.

Each row reports samples/s and the peak GPU memory of its pass. The variants: `fla` (transformers picks
flash-linear-attention's `chunk_gated_delta_rule` when the `fla` package imports; `causal-conv1d` is used too where
installed) and `torch` (a child process in which `fla` cannot be imported: transformers' PyTorch fallback; where fla
is installed, only `--torch-architectures` and their uncompiled rows, to stay within 8 minutes on one H100).
transformers chooses the kernel when it imports the model file, so each variant is its own process. The
JSON (`--output`) holds every row, the machine and the versions; a short table is printed last.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

if "--no-fla" in sys.argv:  # before transformers is imported: it picks the Gated DeltaNet kernels at import
    sys.modules["fla"] = None

import torch  # noqa: E402

# The public config.json files' text and vision dimensions (Qwen/Qwen3.5-2B, Qwen/Qwen3.5-9B, Qwen/Qwen3.5-35B-A3B),
# read from public copies of them (no Hub access here): 9B's text dimensions and 35B-A3B's (as Qwen3.6-35B-A3B's,
# the same architecture) in full; 2B's layers, widths, 3:1 layer pattern and vision tower (24 blocks of 1024), with
# its head counts and MLP width as in its 0.8B sibling's scaled config (8 heads, 2 key-value heads, 16 linear value
# heads; MLP 6144). All share rope theta 1e7, partial rotary 0.25, mrope [11, 11, 10], vocabulary 248,320; the small
# ones tie their embeddings, 9B and up do not.
_VISION_27 = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16)
_VISION_24 = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16)
_LINEAR = dict(linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128, linear_num_key_heads=16)
ARCHITECTURES = {
    "qwen3_5_2b": ("qwen3_5", dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=24, num_attention_heads=8,
                                   num_key_value_heads=2, head_dim=256, linear_num_value_heads=16,
                                   tie_word_embeddings=True, **_LINEAR), _VISION_24),
    "qwen3_5_9b": ("qwen3_5", dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=32, num_attention_heads=16,
                                   num_key_value_heads=4, head_dim=256, linear_num_value_heads=32,
                                   tie_word_embeddings=False, **_LINEAR), _VISION_27),
    "qwen3_5_35b_a3b": ("qwen3_5_moe", dict(hidden_size=2048, num_hidden_layers=40, num_attention_heads=16,
                                            num_key_value_heads=2, head_dim=256, linear_num_value_heads=32,
                                            num_experts=256, num_experts_per_tok=8, moe_intermediate_size=512,
                                            shared_expert_intermediate_size=512, tie_word_embeddings=False, **_LINEAR),
                        _VISION_27),
}
ROWS = ("engine-448", "engine-448-compiled", "plain-448", "engine-mix", "plain-mix", "engine-mix-again",
        "plain-mix-again")


def base_config(name: str, tokenizer, tiny: bool):
    """The architecture's config with the tokenizer's special-token ids (a toy one of its family with `tiny`)."""
    from transformers import AutoConfig

    from fuscore.tiny import tiny_base_config

    family, text, vision = ARCHITECTURES[name]
    if tiny:
        return tiny_base_config(family, tokenizer, num_layers=4)
    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    rope = {"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
            "mrope_section": [11, 11, 10], "mrope_interleaved": True}
    text = dict(text, vocab_size=248320, rope_parameters=rope, max_position_embeddings=262144, rms_norm_eps=1e-6,
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id)
    vision = dict(vision, out_hidden_size=text["hidden_size"], patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  num_position_embeddings=2304)
    return AutoConfig.for_model(family, text_config=text, vision_config=vision,
                                tie_word_embeddings=text["tie_word_embeddings"], **ids)


def plain_pass(base, processor, paths, batch_size: int, device) -> None:
    """The base model's batched forward over `paths` in input order, processor serial, left-padded, last logits."""
    from bench_mixed_sizes import left_padded

    from scoring_fuscore import to_device

    visual = base.model.visual.config
    attention, visual._attn_implementation = visual._attn_implementation, "sdpa"  # the base model's own vision attention
    try:
        with torch.inference_mode():
            for start in range(0, len(paths), batch_size):
                batch = processor.collate([processor.prepare_sample(path) for path in paths[start : start + batch_size]])
                batch = to_device(left_padded(batch), device)
                batch["pixel_values"] = batch["pixel_values"].to(base.dtype)
                base(**batch, logits_to_keep=1, use_cache=False).logits.float().cpu()
    finally:
        visual._attn_implementation = attention


def measured(device, function) -> dict:
    from bench_speed import timed

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, _ = timed(function, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"seconds": seconds, "peak_memory_gib": peak}


def run_variant(args) -> dict:
    """Every architecture's rows in this process (one kernel variant)."""
    import transformers
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen3_5 import modeling_qwen3_5

    from bench_mixed_sizes import MAX_PIXELS, MIN_PIXELS, tiny_vifb, vifb_samples, workload
    from bench_speed import image_processor_for, scratch_folder, write_images
    from modeling_fuscore import FuScoreConfig, FuScoreForQuality

    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    import importlib.metadata

    fla = sys.modules.get("fla")  # imported by transformers when the model file chose its kernels
    variant = {"kernels": "torch" if args.no_fla else "fla", "fla_imported": fla is not None, "architectures": {}}
    for package in ("flash-linear-attention", "fla-core", "causal-conv1d"):
        try:
            variant[f"{package}_version"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            variant[f"{package}_version"] = None
    if not args.no_fla and fla is None:
        variant["warning"] = "fla did not import: this variant ran transformers' PyTorch fallback too"
    del modeling_qwen3_5  # imported above only so that the kernel choice is made before any model is built
    from bench_speed import benchmark_tokenizer

    tokenizer, tokenizer_name = benchmark_tokenizer(args.tiny, "qwen3_5")
    variant["tokenizer"] = tokenizer_name
    side = 64 if args.tiny else 448
    folder = scratch_folder("fuscore_backbones_")
    uniform = write_images(folder, args.images, side)
    vifb_folder = Path(args.vifb)
    vifb = vifb_samples(vifb_folder) if (vifb_folder / "manifest.csv").is_file() and not args.tiny else tiny_vifb(folder)
    mix = [sample[0] for sample in workload(folder, vifb, args.images, args.tiny)[0]]
    for name in args.architectures.split(","):
        row = variant["architectures"][name] = {}
        config = base_config(name, tokenizer, args.tiny)
        torch.manual_seed(0)
        try:
            with torch.device(device):
                base = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
        except torch.OutOfMemoryError as error:
            row["skipped"] = f"the bf16 weights do not fit this GPU ({str(error).splitlines()[0]})"
            print(f"{name}: {row['skipped']}", flush=True)
            torch.cuda.empty_cache()
            continue
        row["parameters_billion"] = sum(parameter.numel() for parameter in base.parameters()) / 1e9
        row["experts_implementation"] = getattr(base.config.get_text_config(), "_experts_implementation", None)
        fuscore_config = FuScoreConfig(base_config=base.config)
        patch = config.vision_config.patch_size
        models = {kind: FuScoreForQuality.from_base_model(base, fuscore_config, tokenizer, processor).eval()
                  for kind, processor in (("448", image_processor_for(patch, side)),
                                          ("mix", image_processor_for(patch, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)))}
        score = {kind: (lambda paths, model=model, compile=False: model.score(
            paths, batch_size=args.batch_size, num_workers=args.workers, compile=compile)) for kind, model in models.items()}
        try:
            score["448"](uniform[: args.batch_size])  # warm-up: kernels, allocator
            row["engine-448"] = measured(device, lambda: score["448"](uniform))
            row["plain-448"] = measured(device, lambda: plain_pass(base, models["448"].processor, uniform[: args.plain_images],
                                                                   args.batch_size, device))
            row["plain-448"]["images"] = args.plain_images
            row["engine-mix"] = measured(device, lambda: score["mix"](mix))
            row["plain-mix"] = measured(device, lambda: plain_pass(base, models["mix"].processor, mix[: args.plain_images],
                                                                   args.batch_size, device))
            row["plain-mix"]["images"] = args.plain_images
            row["engine-mix-again"] = measured(device, lambda: score["mix"](mix))
            row["plain-mix-again"] = measured(device, lambda: plain_pass(base, models["mix"].processor,
                                                                         mix[: args.plain_images], args.batch_size, device))
            row["plain-mix-again"]["images"] = args.plain_images
            if not args.no_compile:
                try:
                    start = time.perf_counter()
                    score["448"](uniform[: args.batch_size], compile=True)
                    row["compile_seconds"] = time.perf_counter() - start
                    row["engine-448-compiled"] = measured(device, lambda: score["448"](uniform, compile=True))
                except Exception as error:  # noqa: BLE001 - recorded: the compiled row is optional
                    row["engine-448-compiled"] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        except torch.OutOfMemoryError as error:
            row["error"] = f"out of memory: {str(error).splitlines()[0]}"
        for key in ROWS:
            if isinstance(row.get(key), dict) and "seconds" in row[key]:
                count = row[key].get("images", args.images)
                row[key]["samples_per_s"] = count / row[key]["seconds"]
        if "engine-448" in row and "plain-448" in row:
            row["speedup_448"] = row["engine-448"]["samples_per_s"] / row["plain-448"]["samples_per_s"]
        if "engine-mix" in row and "plain-mix" in row:
            row["speedup_mix"] = row["engine-mix"]["samples_per_s"] / row["plain-mix"]["samples_per_s"]
        if "engine-mix-again" in row and "plain-mix-again" in row:
            row["speedup_mix_again"] = row["engine-mix-again"]["samples_per_s"] / row["plain-mix-again"]["samples_per_s"]
        print(f"{variant['kernels']} {name}: " + json.dumps({key: value for key, value in row.items()}), flush=True)
        del models, score, base
        if device.type == "cuda":
            torch.cuda.empty_cache()
    variant["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    return variant


def fla_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("fla") is not None


def format_table(results: dict) -> str:
    lines = ["kernels  architecture       " + "".join(f"{row:>21}" for row in ROWS) + "   x448   xmix  xmix2"]
    for variant in results["variants"]:
        for name, row in variant["architectures"].items():
            if "skipped" in row:
                lines.append(f"{variant['kernels']:<8} {name:<18} skipped: {row['skipped']}")
                continue
            cells = []
            for key in ROWS:
                cell = row.get(key, {})
                cells.append(f"{cell['samples_per_s']:8.1f}/s {cell['peak_memory_gib'] or 0:5.1f}GiB"
                             if "samples_per_s" in cell else f"{'-':>20}")
            lines.append(f"{variant['kernels']:<8} {name:<18} " + " ".join(cells) +
                         "".join(f" {row.get(key, float('nan')):6.2f}" for key in ("speedup_448", "speedup_mix",
                                                                                 "speedup_mix_again")))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy size on the CPU (checks the code paths)")
    parser.add_argument("--architectures", default="qwen3_5_2b,qwen3_5_9b,qwen3_5_35b_a3b")
    parser.add_argument("--torch-architectures", default="qwen3_5_2b,qwen3_5_9b",
                        help="architectures of the PyTorch-fallback variant (uncompiled rows only: the 8-minute budget)")
    parser.add_argument("--vifb", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "vifb"))
    parser.add_argument("--images", type=int, default=256, help="images per engine row (448 px, and of the mix)")
    parser.add_argument("--plain-images", type=int, default=128, help="images per plain-forward row")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled engine row")
    parser.add_argument("--kernels", default="auto", help="fla, torch, or auto (fla where it imports, then torch)")
    parser.add_argument("--no-fla", action="store_true", help=argparse.SUPPRESS)  # a child process's variant
    parser.add_argument("--variant-output", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.tiny:
        args.images, args.plain_images, args.batch_size, args.workers = min(args.images, 8), min(args.plain_images, 4), 4, 0
    if args.variant_output:  # a child: one variant, written where the parent reads it
        Path(args.variant_output).write_text(json.dumps(run_variant(args)))
        return
    kernels = {"auto": ["fla", "torch"] if fla_importable() else ["torch"], "fla": ["fla"], "torch": ["torch"]}[args.kernels]
    if "fla" in kernels and not fla_importable():
        raise SystemExit("--kernels fla: the fla package (flash-linear-attention, fla-core) is not installed")
    results = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else "cpu"},
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "tiny": args.tiny,
               "settings": {key: getattr(args, key) for key in ("images", "plain_images", "batch_size", "workers")},
               "variants": []}
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    for kernel in kernels:
        out = scratch / f"fuscore_backbones_{os.getpid()}_{kernel}.json"
        fallback = kernel == "torch" and len(kernels) > 1  # the comparison rows; all rows where fla is missing
        architectures = args.torch_architectures if fallback else args.architectures
        command = [sys.executable, __file__, "--variant-output", str(out), "--architectures", architectures,
                   "--vifb", args.vifb, "--images", str(args.images), "--plain-images", str(args.plain_images),
                   "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
        command += ["--tiny"] * args.tiny + ["--no-compile"] * (args.no_compile or fallback) + ["--no-fla"] * (kernel == "torch")
        print(f"== {kernel} kernels", flush=True)
        finished = subprocess.run(command)
        if finished.returncode != 0 or not out.is_file():
            results["variants"].append({"kernels": kernel, "architectures": {}, "error": f"exit code {finished.returncode}"})
            continue
        results["variants"].append(json.loads(out.read_text()))
        out.unlink()
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    print(format_table(results))


if __name__ == "__main__":
    main()
