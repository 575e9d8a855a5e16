# Copyright 2026 The FuScore authors. Apache-2.0.
"""FuScore processor: rating prompt + Qwen-VL image inputs for infrared-visible fused images.

This file is Hub remote code (`AutoProcessor.from_pretrained(..., trust_remote_code=True)`): it imports
only the standard library, PIL, torch, transformers and its siblings `configuration_fuscore.py` and
`image_utils_fuscore.py` (image loading and its checks).

The processor turns a fused image (optionally with its infrared and visible sources) and a rating dimension
into the inputs of a Qwen-VL model, as the base's chat template writes a one-turn conversation (`chat_format`: the
default system turn of Qwen2-VL and Qwen2.5-VL, the empty think block of Qwen3.5 with thinking off):

    {system turn}<|im_start|>user
    <|vision_start|><|image_pad|>...<|vision_end|>{question}<|im_end|>
    <|im_start|>assistant
    {assistant prefix}{answer prefix}

The model reads the level word that would follow the answer prefix (" excellent", " good", ...).
"""

from typing import Optional, Sequence, Union

import torch
from PIL import Image
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin


try:  # Hub remote code: the sibling file is part of the same dynamic module package.
    from .configuration_fuscore import (
        INPUT_MODES, LEGACY_CHAT_FORMAT, ChatFormat, check_input_mode, default_prompts, resolve_dimensions,
    )
except ImportError:  # A checkout or an installed FuScore: the sibling is a top-level module.
    from configuration_fuscore import (
        INPUT_MODES, LEGACY_CHAT_FORMAT, ChatFormat, check_input_mode, default_prompts, resolve_dimensions,
    )
# Image loading and its checks (the sibling `image_utils_fuscore.py`); their public names stay importable from here.
try:
    from .image_utils_fuscore import (
        HIGH_BIT_DEPTH_NOTE, MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, ImageInputError, ImageLike,
        describe_image, image_size, load_image, size_problem,
    )
except ImportError:
    from image_utils_fuscore import (
        HIGH_BIT_DEPTH_NOTE, MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, ImageInputError, ImageLike,
        describe_image, image_size, load_image, size_problem,
    )


# Sources must be registered to the fused image: their aspect ratio may differ from it by at most this much.
SOURCE_ASPECT_TOLERANCE = 0.02

IMAGE_ROLES = ("fused", "infrared", "visible")


class FuScoreProcessor(ProcessorMixin):
    """Builds FuScore's rating prompts and the Qwen-VL image inputs.

    The processor is the one home of the prompts and of the input mode: both are saved in `processor_config.json`.

    Args:
        image_processor: the base model's Qwen-VL image processor (patch size, merge size and the min/max pixel
            bounds come from it, and so does the number of visual tokens of an image).
        tokenizer: the base model's tokenizer, with the Qwen special tokens.
        prompts (`dict[str, dict[str, str]]`, *optional*): per dimension, a `question` and the `answer` prefix that
            the level word completes. Defaults to FuScore's built-in prompts for `input_mode`.
        input_mode (`str`): `"fused"` (the fused image alone) or `"fused_ir_vis"` (fused, infrared, visible).
        chat_format (`dict` or `ChatFormat`, *optional*): the base family's `system_turn` and `assistant_prefix`
            (`configuration_fuscore.BASE_FAMILIES`); `from_base` sets the family's. A folder saved without one
            reads none of either (`LEGACY_CHAT_FORMAT`), as FuScore wrote its prompts before it recorded them.
    """

    image_token = "<|image_pad|>"
    vision_start_token = "<|vision_start|>"
    vision_end_token = "<|vision_end|>"

    def __init__(self, image_processor=None, tokenizer=None, prompts=None, input_mode="fused", chat_template=None,
                 chat_format=None, **kwargs):
        self.input_mode = check_input_mode(input_mode)
        self.prompts = dict(prompts) if prompts is not None else default_prompts(input_mode)
        if isinstance(chat_format, dict):
            chat_format = ChatFormat(**chat_format)
        self.chat_format = (chat_format or LEGACY_CHAT_FORMAT).to_dict()  # a dict: saved in processor_config.json
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {self.image_token} token: it is not a Qwen-VL tokenizer.")

    # ----------------------------------------------------------------- prompts
    @property
    def dimensions(self) -> tuple:
        return tuple(self.prompts)

    def resolve_dimensions(self, dimensions, argument: str = "dimensions") -> list:
        """`dimensions` checked against this processor's prompts (`configuration_fuscore.resolve_dimensions`)."""
        return resolve_dimensions(dimensions, self.prompts, argument=argument)

    def build_prompt(self, dimension: str, image_token_counts: Sequence[int]) -> str:
        """The chat text for one sample, with each image's placeholder expanded to its visual-token count."""
        if dimension not in self.prompts:
            known = ", ".join(self.prompts) or "none (the processor was built without prompts)"
            raise ValueError(f"Unknown rating dimension {dimension!r}; this model knows: {known}.")
        prompt = self.prompts[dimension]
        images = "".join(
            f"{self.vision_start_token}{self.image_token * count}{self.vision_end_token}" for count in image_token_counts
        )
        system_turn, assistant_prefix = self.chat_format["system_turn"], self.chat_format["assistant_prefix"]
        return (f"{system_turn}<|im_start|>user\n{images}{prompt['question']}<|im_end|>\n<|im_start|>assistant\n"
                f"{assistant_prefix}{prompt['answer']}")

    # ------------------------------------------------------------------ images
    @property
    def merge_size(self) -> int:
        return self.image_processor.merge_size

    def num_visual_tokens(self, width: int, height: int) -> int:
        """Visual tokens the model sees for an image of this size, as the image processor itself counts them
        (`get_number_of_image_patches`: its resize rule and min/max pixel bounds), after the patch merge."""
        return self.image_processor.get_number_of_image_patches(height, width, {}) // self.merge_size**2

    def prepare_images(self, fused: ImageLike, ir: ImageLike = None, vis: ImageLike = None, source: Optional[str] = None):
        """Loads the images one sample needs, in model order, as RGB PIL images.

        Size policy: the sources must be registered to the fused image, so they are resized to the fused image's
        size when their aspect ratio agrees within `SOURCE_ASPECT_TOLERANCE`; otherwise this raises.
        """
        label = source or describe_image(fused, None)
        fused_image = load_image(fused, source=source)
        if self.input_mode == "fused":
            return [fused_image]
        if ir is None or vis is None:
            raise ImageInputError(
                f"{label}: this model reads the fused image with its infrared and visible sources "
                "(input_mode='fused_ir_vis'); pass ir= and vis= as well."
            )
        images = [fused_image]
        for role, image in (("infrared", ir), ("visible", vis)):
            source_image = load_image(image, source=describe_image(image, None) if source is None else f"{source} ({role})")
            fused_aspect = fused_image.width / fused_image.height
            aspect = source_image.width / source_image.height
            if abs(aspect / fused_aspect - 1) > SOURCE_ASPECT_TOLERANCE:
                raise ImageInputError(
                    f"{label}: the {role} source is {source_image.width}x{source_image.height} but the fused image is "
                    f"{fused_image.width}x{fused_image.height}; sources must be registered to the fused image "
                    "(same aspect ratio). Crop or register them first."
                )
            if source_image.size != fused_image.size:
                source_image = source_image.resize(fused_image.size, Image.BICUBIC)
            images.append(source_image)
        return images

    # ---------------------------------------------------------------- samples
    def prepare_sample(self, fused: ImageLike, ir: ImageLike = None, vis: ImageLike = None, dimension: str = "overall",
                       source: Optional[str] = None, defer_pixels: bool = False) -> dict:
        """Everything one sample needs, unbatched: `input_ids` (list), `image_grid_thw` [n, 3] and `pixel_values`
        [patches, dim], and `fused_size`, the fused image's `(height, width)` as loaded (the size an artifact map of
        it is upsampled to).

        With `defer_pixels`, the images stay decoded 8-bit tensors (`images`, a list of [3, H, W] uint8, with their
        `image_token_counts`) and the image processor runs later in `collate`, possibly on the GPU: a preprocessing
        worker then ships 1 byte per pixel to the main process instead of the float patches (8x more with Qwen-VL's
        temporal duplication).
        """
        images = self.prepare_images(fused, ir, vis, source=source)
        if defer_pixels:
            token_counts = [self.num_visual_tokens(image.width, image.height) for image in images]
            sample = {"images": [_pil_to_uint8_chw(image) for image in images], "image_token_counts": token_counts}
        else:
            vision = self.image_processor(images=images, return_tensors="pt")
            grid = vision["image_grid_thw"]
            token_counts = (grid.prod(-1) // self.merge_size**2).tolist()
            sample = {"image_grid_thw": grid, "pixel_values": vision["pixel_values"]}
        text = self.build_prompt(dimension, token_counts)
        input_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": input_ids, **sample, "fused_size": (images[0].height, images[0].width)}

    @property
    def supports_device_preprocessing(self) -> bool:
        """Whether the image processor can run on a torch device (the torchvision backend can, the PIL one cannot)."""
        return any(cls.__name__ == "TorchvisionBackend" for cls in type(self.image_processor).__mro__)

    def collate(self, samples: Sequence[dict], device=None) -> BatchFeature:
        """Right-pads token ids and concatenates the image patches of several samples into one batch.

        Right padding keeps every real token's computation identical to an unpadded run (causal attention never
        looks at the pads), which is what makes scores independent of the batch size. Samples prepared with
        `defer_pixels` are run through the image processor here, on `device` when it supports one.
        """
        if not samples:
            raise ValueError("Cannot collate an empty list of samples.")
        lengths = [len(sample["input_ids"]) for sample in samples]
        max_length = max(lengths)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(samples), max_length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), max_length), dtype=torch.long)
        for row, sample in enumerate(samples):
            input_ids[row, : lengths[row]] = torch.as_tensor(sample["input_ids"], dtype=torch.long)
            attention_mask[row, : lengths[row]] = 1
        # The multimodal RoPE needs to know which tokens are image tokens (1) and which are text (0).
        mm_token_type_ids = (input_ids == self.image_token_id).to(torch.int32) * attention_mask.to(torch.int32)
        if "images" in samples[0]:
            device_kwargs = {"device": device} if device is not None and self.supports_device_preprocessing else {}
            images = [image for sample in samples for image in sample["images"]]
            if device_kwargs and torch.device(device).type == "cuda":
                # Upload asynchronously from pinned memory: the image processor's own blocking copies would wait,
                # image by image, for the GPU to finish the previous batch.
                images = [image.pin_memory().to(device, non_blocking=True) for image in images]
            vision = self.image_processor(images=images, return_tensors="pt", **device_kwargs)
            image_grid_thw = vision["image_grid_thw"].cpu()
            counts = [count for sample in samples for count in sample["image_token_counts"]]
            if (image_grid_thw.prod(-1) // self.merge_size**2).tolist() != counts:
                raise RuntimeError("The image processor made other visual-token counts than its "
                                   "get_number_of_image_patches gave for the prompt; report this with the image "
                                   f"processor's class ({type(self.image_processor).__name__}) and the image sizes.")
            pixel_values = vision["pixel_values"]
        else:
            image_grid_thw = torch.cat([sample["image_grid_thw"] for sample in samples], dim=0)
            pixel_values = torch.cat([sample["pixel_values"] for sample in samples], dim=0)
        return BatchFeature(
            {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "mm_token_type_ids": mm_token_type_ids,
                "pixel_values": pixel_values,
                "image_grid_thw": image_grid_thw,
            }
        )

    # ------------------------------------------------- tensor input: differentiable, on the tensor's device
    # (used by `fuscore.reward`; self-contained: it only calls the helpers above and the image processor)
    class _TensorLayouts(dict):
        """Patch layouts per image size and device: rebuilt on demand, never copied or pickled with the processor."""

        def __deepcopy__(self, memo):
            return type(self)()

        def __reduce__(self):
            return type(self), ()

    def tensor_inputs(self, fused: torch.Tensor, ir: Optional[torch.Tensor] = None, vis: Optional[torch.Tensor] = None,
                      dimensions: Union[str, Sequence[str]] = "overall") -> BatchFeature:
        """Model inputs for batches of image tensors, differentiable with respect to their pixels.

        Args:
            fused, ir, vis (`torch.Tensor` of shape `(B, C, H, W)`): floating-point images in [0, 1], C = 1 (grey,
                replicated as `load_image` does) or 3; values outside are clamped. The sources are read only when
                `input_mode == "fused_ir_vis"` and must have the fused image's aspect ratio (`SOURCE_ASPECT_TOLERANCE`).
            dimensions: one rating dimension or several; row `d * B + b` of the batch is image `b` for dimension `d`.

        Returns:
            A `BatchFeature` as `collate` makes it: `pixel_values` on the images' device (in their dtype, attached to
            their autograd graph), the token side (`input_ids`, `attention_mask`, `mm_token_type_ids`,
            `image_grid_thw`) on the host, where the model's position helpers read it.

        Only differentiable torch operations on the images' device touch the pixels, with the image processor's own
        rules: each image is resized to the patch grid the image processor gives the fused size (`_tensor_layout`)
        with its interpolation (antialiased, as torchvision resizes; skipped when the image is on the grid already),
        clamped to [0, 1] as an 8-bit result is, rescaled and normalised with its factors, and gathered into patches
        along the layout that the image processor itself produces, so patch order and temporal duplication are its
        own whichever backend it has; the prompt's visual-token counts are `num_visual_tokens`.

        For an image already on the patch grid the patches equal the file path's. Otherwise they differ by the resize:
        the file path resamples 8-bit values in two passes, rounding and clipping between them (PIL, and torch's
        PIL-compatible 8-bit kernel in the torchvision backend), this path resamples floats; on average by 0.27 of an
        8-bit level (`tests/test_reward.py`).
        """
        names = self.resolve_dimensions(dimensions)
        roles = [("fused", fused)]
        if self.input_mode == "fused_ir_vis":
            if ir is None or vis is None:
                raise ImageInputError("This model reads the fused image with its infrared and visible sources "
                                      "(input_mode='fused_ir_vis'); pass ir= and vis= tensors as well.")
            roles += [("infrared", ir), ("visible", vis)]
        for role, images in roles:
            if not (torch.is_tensor(images) and images.ndim == 4 and images.shape[1] in (1, 3)
                    and images.is_floating_point()):
                shown = (f"a {images.dtype} tensor of shape {tuple(images.shape)}" if torch.is_tensor(images)
                         else type(images).__name__)
                raise ImageInputError(f"{role}: expected a floating-point [B, C, H, W] tensor in [0, 1] with C = 1 or 3; "
                                      f"got {shown}.")
            height, width = images.shape[-2:]
            if images.shape[0] != fused.shape[0] or images.device != fused.device:
                raise ImageInputError(f"{role}: {images.shape[0]} images on {images.device}, but {fused.shape[0]} fused "
                                      f"images on {fused.device}.")
            if min(height, width) < MIN_IMAGE_SIDE or max(height, width) > MAX_ASPECT_RATIO * min(height, width):
                raise ImageInputError(f"{role}: {width}x{height} pixels; FuScore needs at least {MIN_IMAGE_SIDE} pixels on "
                                      f"each side and at most {MAX_ASPECT_RATIO}:1.")
            if abs((width / height) / (fused.shape[-1] / fused.shape[-2]) - 1) > SOURCE_ASPECT_TOLERANCE:
                raise ImageInputError(f"{role}: {width}x{height} pixels, but the fused images are {fused.shape[-1]}x"
                                      f"{fused.shape[-2]}; sources must be registered to the fused image (same aspect "
                                      "ratio).")
        processor = self.image_processor
        height, width, layout, grid, mean, std = self._tensor_layout(fused.shape[-2], fused.shape[-1], fused.device)
        modes = {2: "bilinear", 3: "bicubic"}  # PIL's resampling codes
        if processor.do_resize and int(processor.resample) not in modes:
            raise ValueError("tensor_inputs resizes bilinearly or bicubically; this image processor resamples with "
                             f"{processor.resample!r}.")
        resized = []
        for _, images in roles:
            images = images.expand(-1, 3, -1, -1)
            if tuple(images.shape[-2:]) != (height, width):
                images = torch.nn.functional.interpolate(images, size=(height, width), antialias=True,
                                                         mode=modes[int(processor.resample)], align_corners=False)
            resized.append(images.clamp(0, 1))
        # The file path hands the image processor 8-bit values: [0, 1] maps to 0..255 before its own rescaling.
        images = torch.stack(resized, dim=1).flatten(0, 1) * (255 * (processor.rescale_factor if processor.do_rescale else 1))
        if processor.do_normalize:
            images = (images - mean.to(images.dtype)) / std.to(images.dtype)
        patches = images.flatten(1)[:, layout]  # [B * images per sample, patches, patch dim]
        per_sample = len(roles)
        token_counts = [self.num_visual_tokens(fused.shape[-1], fused.shape[-2])] * per_sample
        samples = []
        for name in names:
            input_ids = self.tokenizer(self.build_prompt(name, token_counts), add_special_tokens=False)["input_ids"]
            samples += [{"input_ids": input_ids, "image_grid_thw": grid.repeat(per_sample, 1),
                         "pixel_values": patches[row * per_sample : (row + 1) * per_sample].flatten(0, 1)}
                        for row in range(fused.shape[0])]
        return self.collate(samples)

    def _tensor_layout(self, input_height: int, input_width: int, device) -> tuple:
        """For images of `input_height x input_width`: `(height, width, layout, grid, mean, std)`. `height x width` is
        the patch grid's size, read off the image processor run once on a blank image of the input size;
        `layout[p, k]` is the flat index of the pixel that the image processor puts at element `k` of patch `p` of a
        `3 x height x width` image, read off it run on an image of pixel indices (two halves, as its float32 patches
        hold integers exactly only below 2**24). Cached per size and device, with the normalisation constants."""
        cache = self.__dict__.setdefault("_tensor_layouts", self._TensorLayouts())
        key = (input_height, input_width, str(device))
        if key not in cache:
            processor, patch = self.image_processor, self.image_processor.patch_size
            blank = torch.zeros(3, input_height, input_width, dtype=torch.uint8)
            grid = torch.as_tensor(processor(images=[blank], return_tensors="pt")["image_grid_thw"], dtype=torch.long)[:1]
            height, width = int(grid[0, 1]) * patch, int(grid[0, 2]) * patch
            index = torch.arange(3 * height * width, dtype=torch.long)
            halves = []
            for half in (index // 4096, index % 4096):
                out = processor(images=[half.to(torch.float32).view(3, height, width)], do_resize=False,
                                do_rescale=False, do_normalize=False, return_tensors="pt")
                halves.append(torch.as_tensor(out["pixel_values"]).round().long())
            if torch.as_tensor(out["image_grid_thw"]).tolist() != grid.tolist():
                raise RuntimeError(f"The image processor made another patch grid of a {width}x{height} image than of "
                                   f"the {input_width}x{input_height} image it resized to it; report this with the image "
                                   "processor's class and sizes.")
            mean, std = (torch.tensor(getattr(processor, name), dtype=torch.float32).view(-1, 1, 1)
                         for name in ("image_mean", "image_std"))
            cache[key] = (height, width, halves[0].mul_(4096).add_(halves[1]).to(device), grid, mean.to(device),
                          std.to(device))
        return cache[key]

    def __call__(self, images=None, ir=None, vis=None, dimension: str = "overall", return_tensors: str = "pt",
                 *, fused=None, text=None, **kwargs) -> BatchFeature:
        """Processes one fused image or a list of them (with optional matching infrared and visible sources) for one
        rating dimension, as transformers' processors take `images=`.

        Args:
            images: the fused image(s): a path, encoded bytes, a PIL image or an HxW[xC] array, or a list of them.
                `fused=` is the same argument under FuScore's own name.
            text: not taken: the prompt is the processor's own for `dimension` (passing text raises).
            ir, vis: the matching infrared and visible sources (for `input_mode="fused_ir_vis"`).
            dimension: the rating dimension whose prompt is built.
        """
        if fused is not None and images is not None:
            raise ValueError("Pass the fused image(s) as `images=` or as `fused=`, not both.")
        images = fused if images is None else images
        if images is None:
            raise ValueError("FuScoreProcessor needs `images` (the fused image, or a list of fused images).")
        if text is not None:
            raise ValueError("FuScoreProcessor builds its own rating prompt: pass `dimension=` (one of "
                             f"{', '.join(self.prompts)}) instead of `text`.")
        if kwargs:
            raise TypeError(f"FuScoreProcessor got unexpected arguments: {', '.join(sorted(kwargs))}.")
        if return_tensors not in ("pt", None):
            raise ValueError("FuScoreProcessor returns PyTorch tensors only (return_tensors='pt').")
        if not isinstance(images, (list, tuple)):
            images, ir, vis = [images], [ir], [vis]
        ir = ir if isinstance(ir, (list, tuple)) else [ir] * len(images)
        vis = vis if isinstance(vis, (list, tuple)) else [vis] * len(images)
        if not (len(images) == len(ir) == len(vis)):
            raise ValueError(f"Got {len(images)} fused images but {len(ir)} infrared and {len(vis)} visible sources.")
        samples = [self.prepare_sample(f, i, v, dimension) for f, i, v in zip(images, ir, vis)]
        return self.collate(samples)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"]


def _pil_to_uint8_chw(image: Image.Image) -> torch.Tensor:
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width, 3).permute(2, 0, 1)


FuScoreProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["FuScoreProcessor", "ImageInputError", "image_size", "load_image"]  # the last three: image_utils_fuscore's
