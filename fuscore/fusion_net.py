"""A compact infrared-visible fusion network and the fidelity-to-sources loss, for the reward fine-tuning example.

`FusionNet` fuses luminance, as most IVIF networks do: it reads the infrared image and the visible image's luminance
and predicts the fused luminance; the visible chroma is added back (`compose_rgb`, the same additive composition as
FuScore's synthetic benchmark). Its output starts as the average of the two luminances (the residual head is
zero-initialised), so an untrained network is already a plain fusion.

`fidelity_loss` is the usual unsupervised fusion loss: an intensity term pulling the fused luminance towards the
brighter source at each pixel and a gradient term pulling its Sobel gradient magnitude towards the stronger source
gradient, `L = |Y_f - max(Y_ir, Y_vis)|_1 + w |(|grad Y_f|) - max(|grad Y_ir|, |grad Y_vis|)|_1`, the intensity and
texture losses of SeAFusion (Tang et al., "Image fusion in the loop of high-level vision tasks", Information Fusion
2022) and of many fusion networks since.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fuscore_data.synthetic import LUMA


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """`[B, 3, H, W]` (or `[B, 1, H, W]`, returned as is) in [0, 1] -> `[B, 1, H, W]` luma (BT.601 weights)."""
    if rgb.shape[1] == 1:
        return rgb
    weights = torch.as_tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def compose_rgb(fused_y: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Fused luminance plus the visible image's chroma (`vis - luminance(vis)`), clamped to [0, 1]."""
    if vis.shape[1] == 1:
        return fused_y.clamp(0, 1).expand(-1, 3, -1, -1)
    return (fused_y + vis - luminance(vis)).clamp(0, 1)


def sobel_magnitude(y: torch.Tensor) -> torch.Tensor:
    """`|G_x| + |G_y|` of Sobel responses with replicate padding, per pixel."""
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=y.dtype, device=y.device)
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None]  # [2, 1, 3, 3]
    responses = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), kernels)
    return responses.abs().sum(dim=1, keepdim=True)


def fidelity_loss(fused_y: torch.Tensor, ir_y: torch.Tensor, vis_y: torch.Tensor,
                  gradient_weight: float = 10.0) -> torch.Tensor:
    """Intensity + `gradient_weight` x gradient fidelity of `[B, 1, H, W]` luminances in [0, 1] (a scalar)."""
    intensity = (fused_y - torch.maximum(ir_y, vis_y)).abs().mean()
    target = torch.maximum(sobel_magnitude(ir_y), sobel_magnitude(vis_y))
    gradient = (sobel_magnitude(fused_y) - target).abs().mean()
    return intensity + gradient_weight * gradient


class FusionNet(nn.Module):
    """A two-scale convolutional encoder-decoder with a skip connection (about 33 thousand parameters at width 16).

    `forward(ir, vis)` takes `[B, 1 or 3, H, W]` images in [0, 1] (any H, W) and returns the fused RGB image;
    `logits(ir, vis)` is the fused luminance before its sigmoid, the mean of the stochastic policy in the
    group-relative mode.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        act = nn.LeakyReLU(0.1)
        self.encode_full = nn.Sequential(nn.Conv2d(2, width, 3, padding=1), act, nn.Conv2d(width, width, 3, padding=1), act)
        self.encode_half = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), act,
                                         nn.Conv2d(2 * width, 2 * width, 3, padding=1), act,
                                         nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2), act)
        self.decode = nn.Sequential(nn.Conv2d(3 * width, width, 3, padding=1), act)
        self.head = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def logits(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        ir_y, vis_y = luminance(ir), luminance(vis)
        full = self.encode_full(torch.cat([ir_y, vis_y], dim=1))
        half = F.interpolate(self.encode_half(full), size=full.shape[-2:], mode="bilinear", align_corners=False)
        average = ((ir_y + vis_y) / 2).clamp(1e-3, 1 - 1e-3)
        return torch.logit(average) + self.head(self.decode(torch.cat([full, half], dim=1)))

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return compose_rgb(torch.sigmoid(self.logits(ir, vis)), vis)
