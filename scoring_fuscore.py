# Copyright 2026 The FuScore authors. Apache-2.0.
"""The FuScore scoring engine: `score_images`, behind `FuScoreForQuality.score`, the pipeline, the CLI and the
trainer's evaluation.

This file is Hub remote code: it imports only the standard library, torch, transformers and its siblings
`configuration_fuscore.py` and `image_utils_fuscore.py`. It drives any FuScore model object (it needs the model's
`forward`, `position_inputs`, `device` and `dtype`), so it never imports `modeling_fuscore.py`.
"""

import contextlib
import itertools
import operator
import sys
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Optional

import torch


try:  # Hub remote code: the sibling files are part of the same dynamic module package.
    from .configuration_fuscore import BASE_FAMILIES
except ImportError:  # A checkout or an installed FuScore: the siblings are top-level modules.
    from configuration_fuscore import BASE_FAMILIES
try:
    from .image_utils_fuscore import image_size
except ImportError:
    from image_utils_fuscore import image_size


def check_count(value, argument: str, minimum: int = 1) -> int:
    """`value` as an int of at least `minimum`, or a ValueError naming `argument` (2.5, None, "8" and True are refused)."""
    if isinstance(value, bool):
        value = None  # a flag is not a count
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{argument} must be a whole number of at least {minimum}, got {value!r}.") from None
    if count < minimum:
        raise ValueError(f"{argument} must be at least {minimum}, got {count}.")
    return count


def _as_list(images, count: int, name: str) -> list:
    if images is None:
        return [None] * count
    if not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) != count:
        raise ValueError(f"Got {count} fused images but {len(images)} {name} images.")
    return list(images)


class _Failed:
    """What a worker returns for an item it could not prepare: the error (an `ImageInputError` naming the file, or
    another ValueError), raised again in the scoring loop as it is, without the worker's traceback around it."""

    def __init__(self, error: ValueError):
        self.error = error


class _ScoringDataset(torch.utils.data.Dataset):
    """One item per (image, dimension), prepared by the engine's workers (threads or DataLoader processes)."""

    def __init__(self, processor, fused, ir, vis, items, defer_pixels=False):
        self.processor, self.fused, self.ir, self.vis, self.items = processor, fused, ir, vis, items
        self.defer_pixels = defer_pixels

    def __len__(self):
        return len(self.items)

    def __getitem__(self, position):
        index, dimension = self.items[position]
        try:
            sample = self.processor.prepare_sample(self.fused[index], self.ir[index], self.vis[index], dimension,
                                                   defer_pixels=self.defer_pixels)
        except ValueError as error:
            return _Failed(error)
        sample["position"] = position
        return sample


def _checked(samples: list) -> list:
    for sample in samples:
        if isinstance(sample, _Failed):
            raise sample.error
    return samples


def _single_threaded_worker(worker_id: int) -> None:
    # Many preprocessing workers each running a multi-threaded torch would oversubscribe the CPU cores.
    torch.set_num_threads(1)


# The key under which `score_images` returns the artifact maps (and `on_batch` reports them); no dimension may have it.
ARTIFACT_MAP = "artifact_map"


def check_artifact_maps(model, name: str = "This model") -> None:
    """Raises a ValueError, saying what to use instead, when `model` (a FuScore model, or a peft model around one)
    has no artifact map head: maps are asked of a model trained without them, and zeros would pass for "no
    artifacts"."""
    if getattr(model, "artifact_head", None) is None:
        raise ValueError(
            f"{name} was trained without artifact maps (its config has artifact_map false: there is no artifact map "
            "head), so it cannot return them. To see which pixels its score depends on, use model.explain(...): a "
            "saliency map of the score, which is attribution, not artifact detection."
        )


def upsample_artifact_map(grid, size):
    """An artifact map at an image's own size from its merged-patch grid: float32 `(height, width)` in [0, 1].

    Args:
        grid: `(h, w)` artifact probabilities of the image's merged patches (array or tensor).
        size: the image's `(height, width)`.

    The image processor resizes the whole image onto the patch grid (no crop), so each cell covers an equal
    `height / h x width / w` share of the image; the map is the grid upsampled bilinearly with the cells' values at
    their centres (`align_corners=False`), constant beyond the outer centres. Every pixel is a convex combination of
    cell values, so the map stays in [0, 1].
    """
    grid = torch.as_tensor(grid, dtype=torch.float32)
    height, width = (int(n) for n in size)
    upsampled = torch.nn.functional.interpolate(grid[None, None], size=(height, width), mode="bilinear",
                                                align_corners=False)[0, 0]
    return upsampled.clamp_(0, 1).numpy()


# The most padding a batch may hold, as a fraction of its visual tokens: a batch that would pass it ends early.
MAX_BATCH_PADDING = 0.03


def image_tokens(processor, images) -> list:
    """Each image's visual-token count under `processor`, from its size (read from the file header, not decoded);
    0 where the size cannot be read without decoding."""
    return [processor.num_visual_tokens(*size) if size else 0 for size in map(image_size, images)]


def plan_batches(tokens, dimensions, batch_size: int, max_padding: float = MAX_BATCH_PADDING) -> tuple:
    """The engine's batches: `(items, batches)`, items `(image index, dimension)` in input order, batches lists of
    positions in `items`; `tokens` are the fused images' visual-token counts (`image_tokens`).

    Items are sorted by visual-token count and cut into batches of `batch_size`; a batch also ends early where the
    next, larger image would pad its smaller ones by more than `max_padding` of the batch's visual tokens. A job of
    a few sizes then runs batches of one size each, plus one short batch per size at most, instead of batches that
    straddle two sizes and pad the smaller images to the larger (4.4% of the decoder's tokens on a mix of VIFB, MSRS,
    M3FD and LLVIP sizes in batches of 32, 16% with the sources, `benchmarks/RESULTS_speed.md`).
    """
    items = [(index, dimension) for dimension in dimensions for index in range(len(tokens))]
    order = sorted(range(len(items)), key=lambda position: (tokens[items[position][0]], position))
    batches, batch, batch_tokens = [], [], 0
    for position in order:
        count = tokens[items[position][0]]
        # Sorted ascending: this item is the batch's largest, so every item would be padded to its count.
        padding = count * (len(batch) + 1) - batch_tokens - count
        if batch and (len(batch) == batch_size or padding > max_padding * count * (len(batch) + 1)):
            batches.append(batch)
            batch, batch_tokens = [], 0
        batch.append(position)
        batch_tokens += count
    if batch:
        batches.append(batch)
    return items, batches


# Compiling the blocks (`compile_blocks`) pays for a job once the time it saves exceeds its own cost. Measured on one
# H200 with the Qwen3-VL-8B architecture, 1,024 images of a mix of VIFB, MSRS, M3FD and LLVIP sizes
# (benchmarks/RESULTS_speed.md, run 3): 16.1 s to compile in a process that had compiled nothing, then 57.9 samples/s
# against the eager engine's 44.3: it paid from about 3,040 images of 450 visual tokens on average, 1.4 million
# visual tokens. The time saved per token grows with the decoder's size and the compile time does not, so the
# threshold scales with the decoder's parameters (Qwen3-VL-8B's decoder layers: 6.95 B).
COMPILE_PAYS_FROM_VISUAL_TOKENS = 1_400_000
REFERENCE_DECODER_PARAMETERS = 6.95e9


# The first piece of `ramp_up` (0: no ramp-up), and how many of a job's largest batches the decoding threads keep in
# flight (`_decoded_in_threads`); `benchmarks/bench_fp8.py --parts host` compares settings of both. Off since Speed III
# call 15 (benchmarks/RESULTS_speed.md): the pieces (8, 8, 16, 32 images) launched about as slowly as a full batch and
# left the GPU idle between them; without them the float8 engine was 3.2% and 3.0% below model only (calls 15-16),
# with them 3.8% (call 14), on one H100 (the host steps: 4.9% against 6.2% in call 14, 5.4% against 5.3% in call 15).
RAMP_UP_FIRST = 0
DECODE_AHEAD_BATCHES = 2
# Whether GPU scoring calls compute the position inputs once per distinct batch layout (`_PositionsByLayout`), and
# whether the layouts are kept for the model's later calls (not yet measured on a GPU: `bench_fp8.py --parts host`,
# `kept=0`).
REUSE_POSITIONS = True
KEEP_POSITIONS_ACROSS_CALLS = True
# Whether a GPU scoring call's forward passes run without waiting for the GPU (`batch_for_model`): the image grid kept
# on the CPU and the image tokens counted there (`FuScoreForQuality.position_inputs`).
WAITLESS_FORWARD = True
# Whether the decoding and preparing threads of a GPU scoring call start no new work while the scoring thread
# launches a forward pass's kernels (`_LaunchGate`), and the longest they wait for it, in seconds.
PAUSE_WORKERS_WHILE_LAUNCHING = True
LAUNCH_PAUSE_LIMIT = 0.2
# Whether the pause spares the work on the batch the engine awaits next: its decoding (`_decoded_in_threads`) and its
# preparation (`score_images`'s `prepare`). In call 12 of benchmarks/RESULTS_speed.md the GPU waited 110 ms at the
# ramp-up's end for a first full batch whose decoding had paused through the launches of the ramp-up's pieces. With
# it the float8 engine ran 6.2% below model only against 7.7% without (call 14's host step), 5.4% against 6.1% with no
# ramp-up (call 15's).
PAUSE_ONLY_WORK_AHEAD = True


def ramp_up(batches: list, first: Optional[int] = None) -> list:
    """`batches` with the first one cut into pieces of `first`, `first`, `2 first`, `4 first`, ... items (8, 8, 16, 32
    for a batch of 64; `first` defaults to `RAMP_UP_FIRST`, and 0 leaves the batches as they are): the GPU starts
    once `first` images are decoded instead of a whole batch, and each piece's decoding hides behind the forward pass
    of the piece before it. The pieces hold the first batch's items, so padding is unchanged; a first batch under
    `4 first` items stays whole. (On one H100, 8B, 448 px, float8, the GPU idled about 0.2 s at the start of every
    `score` call while the first 64 images were decoded.)"""
    first = RAMP_UP_FIRST if first is None else first
    if not batches or first <= 0 or len(batches[0]) < 4 * first:
        return batches
    head, pieces, size = list(batches[0]), [], first
    while len(head) > 2 * size:
        pieces.append(head[:size])
        head = head[size:]
        size = size if len(pieces) == 1 else 2 * size
    return pieces + [head] + list(batches[1:])


def compile_pays(model, processor, tokens, dimensions: int = 1) -> bool:
    """Whether compiling `model`'s blocks pays for a job of fused images with visual-token counts `tokens`
    (`image_tokens`) on `dimensions` dimensions: on a GPU, when the job's visual tokens (the sources' too, taken to
    be as large as the fused image) reach `COMPILE_PAYS_FROM_VISUAL_TOKENS`, scaled by the decoder's size. A job
    whose sizes are unknown (no counts) is taken to be large. Never on the CPU, where it was not measured, nor for a
    base family whose compiled blocks were measured not to pay (`BaseFamily.compile_may_pay`: Qwen3.5's). A model
    already compiled gives True (compiling again is free)."""
    layers = model.model.language_model.layers
    if all(getattr(layer, "_fuscore_compiled", False) for layer in layers):
        return True
    family = BASE_FAMILIES.get(getattr(model.config.base_config, "model_type", None))
    if model.device.type != "cuda" or (family is not None and not family.compile_may_pay):
        return False
    known = [count for count in tokens if count]
    if not known:
        return True
    per_sample = 3 if processor.input_mode == "fused_ir_vis" else 1
    job = sum(known) / len(known) * len(tokens) * dimensions * per_sample
    decoder_parameters = sum(parameter.numel() for parameter in layers.parameters())
    return job >= COMPILE_PAYS_FROM_VISUAL_TOKENS * REFERENCE_DECODER_PARAMETERS / decoder_parameters


def compile_for_job(model, processor, tokens, dimensions: int, compile) -> bool:
    """Compiles `model`'s blocks (`compile_blocks`) for a job of fused images with visual-token counts `tokens` on
    `dimensions` dimensions as `compile` asks: `True` always, `"auto"` where `compile_pays`, `False` never. Returns
    whether the blocks were compiled for it."""
    if compile not in (True, False, "auto"):
        raise ValueError(f"compile must be True, False or 'auto', got {compile!r}.")
    if compile == "auto":
        compile = compile_pays(model, processor, tokens, dimensions)
    if compile:
        model.compile_blocks()
    return compile


def score_images(model, processor, fused, ir=None, vis=None, dimensions=("overall",), batch_size=8, num_workers=0,
                 progress=False, compile=False, on_batch=None, return_maps=False) -> dict:
    """Scores `fused` (a list of images) with `model` on each of `dimensions`.

    Items (image x dimension) are sorted by visual-token count so each batch pads little, decoded by `num_workers`
    workers while the model runs, and scored with logits at the answer position only. On a GPU the workers are
    threads, the patches and the copies are made by a background thread, the position inputs are computed once per
    batch layout and kept for the model's next calls (`_PositionsByLayout`), the forward passes do not wait for the
    GPU (`batch_for_model`), the workers start no new work while a forward pass's kernels are being launched, but for
    the batch awaited next (`_LaunchGate`), batch k's results are read once batch k+1 is queued, the first batch may
    be cut into growing pieces (`ramp_up`, off as shipped), and the interpreter's GIL switch interval is
    `GPU_SWITCH_INTERVAL` while the call runs (process-wide, restored after);
    `benchmarks/RESULTS_speed.md` measures these.

    Args:
        model: a `FuScoreForQuality` (or a peft model around one).
        processor: its `FuScoreProcessor`.
        fused: a list of images (paths, encoded bytes, PIL images or HxW[xC] arrays).
        ir, vis: lists of the matching sources (or None).
        dimensions: names the processor has prompts for, as its `resolve_dimensions` returns them (the caller's front
            door resolves them once; this engine takes them as given).
        batch_size: items per forward pass.
        num_workers: decoding workers (threads on a GPU, DataLoader processes on the CPU).
        progress: show a progress bar.
        compile: `True`: compile the model's blocks first (`compile_blocks`); `"auto"`: where `compile_pays` says
            it pays for this job; `False`: as the model is (`compile_for_job`).
        on_batch: called after each batch with the images it completed (every dimension scored), as
            `[(index, {dimension: {"score", "std", "probs"}}), ...]` (a scoring job's progress and what it keeps
            when interrupted); with `return_maps`, each image's dict also holds its map under `ARTIFACT_MAP`.
        return_maps: also return each image's artifact map (the model needs the artifact map head:
            `check_artifact_maps`), as `{"grid": float32 (h, w) array, "size": (height, width)}`: the head's
            probabilities on the fused image's merged-patch grid and the image's own size, which
            `upsample_artifact_map` turns into the map at that size (kept small here: a job of many large images
            would otherwise hold every full-size map). The map is read from the image's first dimension's row: the
            fused image's tokens precede the question, so every dimension's row gives the same map.

    Returns:
        In input order, `{dimension: {"score": [...], "std": [...], "probs": [[...], ...]}}`; with `return_maps`,
        also `{ARTIFACT_MAP: [{"grid", "size"}, ...]}`.
    """
    fused = list(fused)
    ir = _as_list(ir, len(fused), "ir")
    vis = _as_list(vis, len(fused), "vis")
    dimensions = list(dimensions)
    batch_size = check_count(batch_size, "batch_size")
    num_workers = check_count(num_workers, "num_workers", minimum=0)
    if processor.input_mode == "fused" and any(source is not None for source in ir + vis):
        warnings.warn("This model reads the fused image alone (input_mode 'fused'): the infrared and visible sources "
                      "given with it are ignored.", UserWarning, stacklevel=2)
    if return_maps:
        check_artifact_maps(model)
        if ARTIFACT_MAP in dimensions:
            raise ValueError(f"A dimension named {ARTIFACT_MAP!r} cannot be scored with return_maps: the maps are "
                             "returned under that name.")
    tokens = image_tokens(processor, fused)
    compile_for_job(model, processor, tokens, len(dimensions), compile)
    items, batches = plan_batches(tokens, dimensions, batch_size)
    on_gpu = model.device.type == "cuda"
    if on_gpu:
        batches = ramp_up(batches)
    # On a GPU with a torchvision image processor, workers only decode (uint8) and the patches are made on the GPU.
    defer_pixels = model.device.type == "cuda" and processor.supports_device_preprocessing
    dataset = _ScoringDataset(processor, fused, ir, vis, items, defer_pixels=defer_pixels)
    gate = _LaunchGate(on_gpu and PAUSE_WORKERS_WHILE_LAUNCHING)

    def collate_in_worker(samples):
        # A failed item travels to the scoring loop as it is (collating the batch around it would fail otherwise).
        if defer_pixels or any(isinstance(sample, _Failed) for sample in samples):
            return samples, None
        return processor.collate(samples), [(sample["position"], sample["fused_size"]) for sample in samples]

    if defer_pixels and num_workers > 0:
        loader = _decoded_in_threads(dataset, batches, num_workers, DECODE_AHEAD_BATCHES, gate)
    else:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=collate_in_worker,
            pin_memory=model.device.type == "cuda",
            worker_init_fn=_single_threaded_worker,
        )

    results = {dim: {"score": [None] * len(fused), "std": [None] * len(fused), "probs": [None] * len(fused)} for dim in dimensions}
    maps = [None] * len(fused)
    fused_sizes = [None] * len(fused)  # (height, width) of each fused image as loaded, filled as batches are prepared
    dimensions_left = [len(dimensions)] * len(fused)

    def start_copy(output):
        # One asynchronous device-to-host copy per batch (into pinned memory), and an event that marks its end:
        # reading the values then waits for this batch alone, not for the batches queued after it.
        values = [output.score.to("cpu", non_blocking=True), output.score_std.to("cpu", non_blocking=True),
                  output.level_probs.to("cpu", non_blocking=True)]
        if return_maps:
            values += [output.artifact_probs.to("cpu", non_blocking=True),
                       output.artifact_grids.to("cpu", non_blocking=True)]
        copied = None
        if on_gpu:
            copied = torch.cuda.Event()
            copied.record()
        return values, copied

    def store(copy, positions):
        values, copied = copy
        if copied is not None:
            copied.synchronize()
        scores, stds, probs = (value.tolist() for value in values[:3])
        if return_maps:
            grids = values[4].tolist()
            patch_probs = values[3].split([h * w for h, w in grids])
        for row, position in enumerate(positions):
            index, dimension = items[position]
            results[dimension]["score"][index] = scores[row]
            results[dimension]["std"][index] = stds[row]
            results[dimension]["probs"][index] = probs[row]
            if return_maps and dimension == dimensions[0]:
                maps[index] = {"grid": patch_probs[row].reshape(grids[row]).clone().numpy(),
                               "size": tuple(fused_sizes[index])}
            dimensions_left[index] -= 1
        if on_batch is not None:
            completed = sorted({items[position][0] for position in positions if dimensions_left[items[position][0]] == 0})
            on_batch([(index, image_results(index)) for index in completed])

    def image_results(index) -> dict:
        found = {dim: {name: results[dim][name][index] for name in ("score", "std", "probs")} for dim in dimensions}
        if return_maps:
            found[ARTIFACT_MAP] = maps[index]
        return found

    positions_of = _PositionsByLayout.of(model) if on_gpu and REUSE_POSITIONS else None
    taken = [0]  # batches the scoring loop has taken: the next one it takes is the one it awaits

    def prepare(numbered):
        number, (batch, placed) = numbered
        gate.wait((lambda: number <= taken[0]) if PAUSE_ONLY_WORK_AHEAD else None)
        if defer_pixels or placed is None:  # uncollated samples: deferred pixels, or a batch where an item failed
            samples = _checked(batch)
            placed = [(sample["position"], sample["fused_size"]) for sample in samples]
            batch = processor.collate(samples, device=model.device if defer_pixels else None)
        positions = [position for position, _ in placed]
        for position, size in placed:
            fused_sizes[items[position][0]] = size
        # The positions are computed here, on the CPU, rather than inside the forward pass on the GPU; on a GPU once
        # per distinct batch layout, kept across calls (a job of one image size and dimension has one, and its tail).
        batch = {**batch, **(positions_of(model, batch) if positions_of is not None else model.position_inputs(batch))}
        return batch_for_model(model, batch, return_maps), positions

    # On a GPU the batches are prepared in a background thread: the scoring thread waits for each batch's results
    # (`store`) while the GPU runs the next one, and the next batch's collation, positions and copies fill that time.
    prepared = _in_background_thread(map(prepare, enumerate(loader))) if on_gpu else map(prepare, enumerate(loader))
    batches_in_order = prepared
    if progress:
        from tqdm.auto import tqdm

        batches_in_order = tqdm(prepared, total=len(batches), desc="Scoring", unit="batch")
    pending = None
    try:
        with _evaluating(model), torch.inference_mode(), (_gpu_switch_interval() if on_gpu else contextlib.nullcontext()):
            for batch, positions in batches_in_order:
                taken[0] += 1
                if PAUSE_ONLY_WORK_AHEAD:
                    gate.notify()  # the next batch is awaited now: its preparation may go on through the launch
                with gate.launching():
                    copy = start_copy(model(**batch))
                # Read the previous batch's results only now, so the CPU is not waiting while the GPU runs this one.
                if pending is not None:
                    store(*pending)
                pending = (copy, positions)
            if pending is not None:
                store(*pending)
                pending = None
    except BaseException:
        if pending is not None and on_batch is not None:  # interrupted: the last batch that ran is reported too
            try:
                store(*pending)
            except Exception:  # the batch's results cannot be read (the error being raised says why)
                pass
        raise
    finally:
        if hasattr(prepared, "close"):
            prepared.close()
        # Drop the DataLoader's iterator now, which stops its worker processes at once: an error's traceback keeps
        # this frame, and a worker iterator that lived on with it took 10 s to stop when the error was released.
        batches_in_order = prepared = loader = None
    if return_maps:
        results[ARTIFACT_MAP] = maps
    return results


# The GIL switch interval while a GPU scoring call runs. The thread that launches the GPU's kernels gives up the GIL at
# every launch and takes it back afterwards; while the decoding and preparing threads are busy (the first second of a
# call, before they are ahead) each take-back waited up to the interpreter's 5 ms: on one H100 (8B, float8) the first
# 8 images' vision tower took 183 ms to launch for 8 ms of GPU work (benchmarks/RESULTS_speed.md). None: leave it.
GPU_SWITCH_INTERVAL = 1e-4
_SWITCH_INTERVAL_USERS = [0, None]  # calls inside `_gpu_switch_interval` now, and the interval they found
_SWITCH_INTERVAL_LOCK = threading.Lock()


@contextlib.contextmanager
def _gpu_switch_interval():
    """`GPU_SWITCH_INTERVAL` for the duration of the outermost of any concurrent scoring calls, then the process's
    own interval again."""
    if GPU_SWITCH_INTERVAL is None:
        yield
        return
    with _SWITCH_INTERVAL_LOCK:
        if _SWITCH_INTERVAL_USERS[0] == 0:
            _SWITCH_INTERVAL_USERS[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(GPU_SWITCH_INTERVAL, _SWITCH_INTERVAL_USERS[1]))
        _SWITCH_INTERVAL_USERS[0] += 1
    try:
        yield
    finally:
        with _SWITCH_INTERVAL_LOCK:
            _SWITCH_INTERVAL_USERS[0] -= 1
            if _SWITCH_INTERVAL_USERS[0] == 0:
                sys.setswitchinterval(_SWITCH_INTERVAL_USERS[1])


# Per model, how many scoring calls run now and the mode the first of them found; the only state concurrent calls
# share, kept here rather than on the model and changed under a lock.
_SCORING_CALLS = weakref.WeakKeyDictionary()
_SCORING_CALLS_LOCK = threading.Lock()


@contextlib.contextmanager
def _evaluating(model):
    """Eval mode while any scoring call on `model` runs: the first call switches it, the last one gives it back in
    the mode the first found. (Each call switching and restoring on its own would let one call end another's eval
    mode midway: dropout would then act in the other's forward passes.)"""
    with _SCORING_CALLS_LOCK:
        calls, was_training = _SCORING_CALLS.get(model, (0, model.training))
        if calls == 0:
            model.eval()
        _SCORING_CALLS[model] = (calls + 1, was_training)
    try:
        yield
    finally:
        with _SCORING_CALLS_LOCK:
            calls, was_training = _SCORING_CALLS[model]
            if calls == 1:
                del _SCORING_CALLS[model]
                model.train(was_training)
            else:
                _SCORING_CALLS[model] = (calls - 1, was_training)


def batch_for_model(model, batch: dict, return_maps: bool = False) -> dict:
    """A collated batch with its position inputs (`model.position_inputs`) as the engine hands it to `model`: on a
    GPU, marked right-padded (`forward`'s `right_padded`: the decoder needs no padding mask) and, with
    `WAITLESS_FORWARD`, its image grid kept on the CPU, where the base model reads it without waiting for the GPU
    (with the precomputed vision inputs the grid is read for the images' token counts only); everything else moved
    to the model's device, the patches in its dtype."""
    batch = dict(batch)
    on_gpu = model.device.type == "cuda"
    if on_gpu and "position_ids" in batch:
        batch["right_padded"] = True
    grid = batch.pop("image_grid_thw") if on_gpu and WAITLESS_FORWARD and "vision_inputs" in batch else None
    if on_gpu and not WAITLESS_FORWARD:
        batch.pop("image_tokens_checked", None)
    batch = to_device(batch, model.device)
    if grid is not None:
        batch["image_grid_thw"] = grid
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    if getattr(model, "artifact_head", None) is not None:
        batch["return_artifact_map"] = return_maps  # selecting the map's tokens waits for the GPU: only if asked
    return batch


class _LaunchGate:
    """Keeps a GPU scoring call's decoding and preparing threads from starting new work while its scoring thread
    launches a forward pass's kernels (`PAUSE_WORKERS_WHILE_LAUNCHING`).

    Every kernel launch hands the GIL over and takes it back; while the other threads are busy, each take-back waits
    for one of them to let go (on one H100, 8B, float8: about 8 ms of host time per compiled block at the start of a
    call against 1.5 ms once they were ahead, `benchmarks/RESULTS_speed.md`). The forward pass does not wait for the
    GPU (`WAITLESS_FORWARD`), so its launches end long before its kernels do, and the workers have that time. A
    worker waits at most `LAUNCH_PAUSE_LIMIT` seconds (a forward pass that does wait for the GPU, as one returning
    artifact maps does, holds the gate that long), and the gate opens whatever the forward pass raises. (Float8
    engine, 1,024 images, one H100: 181.1 img/s with both, 175.0 with the waitless forward alone, 167.4 with
    neither; `benchmarks/RESULTS_speed.md`, Speed III call 12. With `PAUSE_ONLY_WORK_AHEAD` the work on the batch
    awaited next goes on through the launches: calls 14 and 15.)"""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.launching_now = False
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def launching(self):
        if not self.enabled:
            yield
            return
        with self.changed:
            self.launching_now = True
        try:
            yield
        finally:
            with self.changed:
                self.launching_now = False
                self.changed.notify_all()

    def wait(self, spared=None) -> None:
        """Returns once no forward pass is being launched, or `spared()` is true (checked again at each `notify`),
        or after `LAUNCH_PAUSE_LIMIT` seconds."""
        if not self.enabled:
            return
        with self.changed:
            self.changed.wait_for(lambda: not self.launching_now or (spared is not None and spared()), LAUNCH_PAUSE_LIMIT)

    def notify(self) -> None:
        """Wakes the waiting workers to check their `spared` again."""
        if self.enabled:
            with self.changed:
                self.changed.notify_all()


def to_device(value, device):
    """Moves the tensors of a batch (nested mappings included, a `BatchFeature` too) to `device`; to a GPU from pinned
    memory, asynchronously."""
    if isinstance(value, Mapping):
        return {key: to_device(item, device) for key, item in value.items()}
    if not torch.is_tensor(value):
        return value
    if device.type == "cuda" and value.device.type == "cpu":
        value = value.pin_memory()
    return value.to(device, non_blocking=True)


class _PositionsByLayout:
    """`model.position_inputs(batch)`, computed once per batch layout and kept per model across scoring calls: they
    depend only on the token ids, their types, the padding mask and the image grids (and the model's configuration),
    so batches equal in all four get the same (CPU) tensors, which the engine copies to the GPU and never changes.
    Computing them held the GIL about 12 ms per batch of 64 on the GPU machine (py-spy, `benchmarks/RESULTS_speed.md`,
    Speed III call 10; 30 ms on the project's 2-core CPU: transformers' `get_rope_index` loops over the rows in
    Python). At the start of a call, with the decoding threads busy, it held the first batch back: the GPU idled 77-89
    ms before the first forward pass of every 2,048-image call (calls 15-16), which a job scored in chunks
    (`fuscore score`) paid per chunk. Kept: the `LAYOUTS` last used, `BYTES` at most together (keys included)."""

    LAYOUTS = 64
    BYTES = 256 * 2**20
    _by_model = weakref.WeakKeyDictionary()
    _models_lock = threading.Lock()

    def __init__(self):
        self.layouts, self.bytes, self.lock = OrderedDict(), 0, threading.Lock()

    @classmethod
    def of(cls, model) -> "_PositionsByLayout":
        """The layouts kept for `model` (held weakly: a model that is dropped takes its layouts with it); a new,
        empty set without `KEEP_POSITIONS_ACROSS_CALLS`."""
        if not KEEP_POSITIONS_ACROSS_CALLS:
            return cls()
        with cls._models_lock:
            positions = cls._by_model.get(model)
            if positions is None:
                positions = cls._by_model[model] = cls()
            return positions

    def __call__(self, model, batch) -> dict:
        key = tuple((name, tuple(batch[name].shape), batch[name].numpy().tobytes())
                    for name in ("input_ids", "mm_token_type_ids", "attention_mask", "image_grid_thw")
                    if batch.get(name) is not None)
        with self.lock:
            found = self.layouts.get(key)
            if found is not None:
                self.layouts.move_to_end(key)
                return found[0]
        inputs = model.position_inputs(batch)  # outside the lock: concurrent calls do not wait for each other
        size = sum(len(part[2]) for part in key) + _tensor_bytes(inputs)
        with self.lock:
            if key not in self.layouts:
                self.layouts[key] = (inputs, size)
                self.bytes += size
                while len(self.layouts) > 1 and (len(self.layouts) > self.LAYOUTS or self.bytes > self.BYTES):
                    self.bytes -= self.layouts.popitem(last=False)[1][1]
        return inputs


def _tensor_bytes(value) -> int:
    if torch.is_tensor(value):
        return value.nbytes
    if isinstance(value, Mapping):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def _decoded_in_threads(dataset, batches, num_workers: int, prefetch_batches: int = 2, gate: Optional[_LaunchGate] = None):
    """`(samples, positions)` per batch, the samples decoded by a pool of `num_workers` threads, in order; with `gate`,
    each item waits for it before it starts (`_LaunchGate`).

    PIL decodes and torch copies without holding the GIL, so threads decode in parallel; unlike DataLoader worker
    processes they start instantly (forking a process that holds a CUDA context is slow) and share memory with the
    GPU thread (no shared-memory copies). Up to `prefetch_batches` of the largest batch's images are in flight, so
    that the small first batches of `ramp_up` leave the decoders as far ahead as full batches do.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="fuscore-decode")
    upcoming = iter(batches)
    in_flight = deque()
    ahead = prefetch_batches * max((len(batch) for batch in batches), default=1)

    submitted, handed = [0], [0]  # batches submitted, and handed on (the next one handed on is the one awaited)

    def item(position, batch_number):
        if gate is not None:
            gate.wait((lambda: batch_number <= handed[0]) if PAUSE_ONLY_WORK_AHEAD else None)
        return dataset[position]

    def submit() -> None:
        while not in_flight or sum(len(futures) for futures in in_flight) < ahead:
            batch = next(upcoming, None)
            if batch is None:
                return
            in_flight.append([pool.submit(item, position, submitted[0]) for position in batch])
            submitted[0] += 1

    try:
        submit()
        while in_flight:
            samples = _checked([future.result() for future in in_flight.popleft()])
            handed[0] += 1
            if gate is not None and PAUSE_ONLY_WORK_AHEAD:
                gate.notify()  # the next batch is awaited now: its paused items may start
            submit()
            yield samples, [sample["position"] for sample in samples]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_background_thread(iterable, depth: int = 2):
    """Iterates `iterable` in a daemon thread, up to `depth` items ahead; its exceptions re-raise here, unchanged.

    Closing the generator (or leaving a loop over it early) stops the thread at its next item.
    """
    import queue
    import threading

    items = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for entry in iterable:
                if not put((entry, None)):
                    return
            put((done, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread, which re-raises it
            put((None, error))

    thread = threading.Thread(target=produce, name="fuscore-prepare", daemon=True)
    thread.start()
    try:
        while True:
            entry, error = items.get()
            if error is not None:
                raise error
            if entry is done:
                return
            yield entry
    finally:
        stop.set()
        thread.join(timeout=5)


__all__ = ["ARTIFACT_MAP", "COMPILE_PAYS_FROM_VISUAL_TOKENS", "batch_for_model", "check_artifact_maps", "upsample_artifact_map", "MAX_BATCH_PADDING", "compile_for_job", "compile_pays", "image_tokens",
           "plan_batches", "ramp_up", "score_images", "to_device"]
