"""Batched, seeded image augmentations that run on any device.

Randomness comes from an explicit ``torch.Generator`` (seeded per training step by the
caller), so a resumed run draws exactly the augmentations an uninterrupted run would.
Each function returns the augmented batch and the parameters it sampled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset per image.

    x: (B, C, H, W). Returns the crops (B, C, H, W) and the offsets (B, 2) as (dy, dx).
    """
    if padding <= 0:
        return x, torch.zeros(x.shape[0], 2, dtype=torch.long)
    b, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator)
    xp = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    off = offsets.to(x.device)
    rows = off[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
    cols = off[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(), offsets


def random_hflip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each image left-right with probability ``p``. Returns (images, flipped (B,) bool)."""
    flip = torch.rand(x.shape[0], generator=generator) < p
    f = flip.to(x.device)[:, None, None, None]
    return torch.where(f, x.flip(-1), x), flip


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator determined by (seed, step): resumable randomness for training steps."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63 - 1))
    return g


# ---------------------------------------------------------------------------------------------
# Augmentations that return their parameters (two-view SSL, AugSelf).
#
# Conventions shared by every op below:
# * images are float (B, C, H, W) in [0, 1], C = 1 or 3, on any device;
# * randomness is drawn on the CPU from ``generator`` (a fixed number of draws per op, whatever
#   the probabilities), then moved to the images' device, so the views of a training step are
#   a function of (seed, step) only;
# * each op returns ``(images, params)``: ``params`` is a dict of per-image tensors (B, ...) on
#   the images' device, with keys unique across ops so the dicts of a pipeline merge; the
#   matching ``apply_*`` reproduces the op's output exactly from recorded params (the op itself
#   is "sample params, then apply_*").
# ---------------------------------------------------------------------------------------------

#: ITU-R 601-2 luma weights, as torchvision's ``rgb_to_grayscale`` uses them.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: Order of the four factors in ``jitter_factors`` and of the op ids in ``jitter_order``.
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _uniform(shape: tuple[int, ...], lo: float, hi: float,
             generator: torch.Generator | None) -> torch.Tensor:
    """Uniform draws in [lo, hi) on the CPU (float64)."""
    return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _bernoulli(b: int, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B,) bool, each True with probability p (always one draw per image)."""
    return torch.rand(b, generator=generator) < p


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (B, C, H, W) with C in (1, 3), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}")


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma (B, 1, H, W) of (B, 3, H, W) RGB, torchvision's weights; 1-channel input as is."""
    if x.shape[-3] == 1:
        return x
    r, g, b = x.unbind(-3)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(-3)


# --- random resized crop -----------------------------------------------------------------------

def sample_resized_crop_boxes(
    b: int, height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: torch.Generator | None = None,
    n_tries: int = 10,
) -> torch.Tensor:
    """Integer-pixel crop boxes with torchvision's RandomResizedCrop semantics, vectorised.

    Per image: ``n_tries`` candidates (area fraction uniform in ``scale``, aspect ratio
    log-uniform in ``ratio``, side lengths rounded); the first candidate that fits is taken, at
    a uniform integer offset; if none fits, the centre crop of the whole image clipped to the
    ratio range. Returns (B, 4) float64 boxes (y0, x0, h, w) in pixels.
    """
    area = float(height * width)
    target = area * _uniform((b, n_tries), scale[0], scale[1], generator)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(_uniform((b, n_tries), log_lo, log_hi, generator))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.int8).argmax(dim=1, keepdim=True)  # index of the first valid try
    ok = valid.any(dim=1)
    h = h.gather(1, first)[:, 0]
    w = w.gather(1, first)[:, 0]
    u = torch.rand(b, 2, generator=generator, dtype=torch.float64)
    # fallback: whole image, clipped to the ratio range, centred
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    h = torch.where(ok, h, torch.full_like(h, fh))
    w = torch.where(ok, w, torch.full_like(w, fw))
    top = torch.minimum(torch.floor(u[:, 0] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, 1] * (width - w + 1)), width - w)
    top = torch.where(ok, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(ok, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1)


def random_resized_crop(
    x: torch.Tensor, size: int | tuple[int, int], scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Random resized crop to ``size`` (torchvision semantics; see sample_resized_crop_boxes).

    params: ``crop_box`` (B, 4) float32 = (y0, x0, h, w) of the crop, normalised by the
    source image's (H, W) (so in [0, 1]).
    """
    _check_images(x)
    _, _, hh, ww = x.shape
    box = sample_resized_crop_boxes(x.shape[0], hh, ww, scale, ratio, generator)
    box = box / torch.tensor([hh, ww, hh, ww], dtype=torch.float64)
    params = {"crop_box": box.to(device=x.device, dtype=torch.float32)}
    return apply_resized_crop(x, params, size), params


def apply_resized_crop(x: torch.Tensor, params: dict[str, torch.Tensor],
                       size: int | tuple[int, int]) -> torch.Tensor:
    """Resample each image's ``crop_box`` to ``size`` with bilinear interpolation.

    One batched ``grid_sample``. Output pixel i of a crop (y0, h) in pixels samples source row
    ``y0 + clamp((i + 0.5) * h / out - 0.5, 0, h - 1)``: exactly crop-then-resize with
    ``F.interpolate(mode="bilinear", align_corners=False)``, i.e. torchvision's
    ``resized_crop(..., antialias=False)``. No antialiasing when shrinking.
    """
    b, _, hh, ww = x.shape
    oh, ow = _pair(size)
    box = params["crop_box"].to(device=x.device, dtype=torch.float32)
    y0, x0 = box[:, 0:1] * hh, box[:, 1:2] * ww
    bh, bw = box[:, 2:3] * hh, box[:, 3:4] * ww
    iy = torch.arange(oh, device=x.device, dtype=torch.float32) + 0.5
    ix = torch.arange(ow, device=x.device, dtype=torch.float32) + 0.5
    zero = torch.zeros((), device=x.device)
    sy = y0 + torch.maximum(torch.minimum(iy * (bh / oh) - 0.5, bh - 1), zero)  # (B, oh)
    sx = x0 + torch.maximum(torch.minimum(ix * (bw / ow) - 0.5, bw - 1), zero)  # (B, ow)
    gy = (2 * sy + 1) / hh - 1
    gx = (2 * sx + 1) / ww - 1
    grid = torch.stack(
        [gx[:, None, :].expand(b, oh, ow), gy[:, :, None].expand(b, oh, ow)], dim=-1
    )
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


# --- horizontal flip ---------------------------------------------------------------------------

def random_horizontal_flip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Flip left-right with probability p. params: ``flip`` (B,) bool."""
    params = {"flip": _bernoulli(x.shape[0], p, generator).to(x.device)}
    return apply_horizontal_flip(x, params), params


def apply_horizontal_flip(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    f = params["flip"].to(x.device)
    if not bool(f.any()):
        return x
    return torch.where(f[:, None, None, None], x.flip(-1), x)


# --- colour jitter -----------------------------------------------------------------------------

def jitter_ranges(brightness: float, contrast: float, saturation: float,
                  hue: float) -> tuple[tuple[float, float], ...]:
    """Sampling ranges of the four factors: [max(0, 1 - s), 1 + s] for the first three and
    [-h, h] for the hue shift (h <= 0.5, in turns of the hue circle)."""
    for name, s in zip(JITTER_OPS, (brightness, contrast, saturation, hue)):
        if s < 0:
            raise ValueError(f"{name} strength must be >= 0, got {s}")
    if hue > 0.5:
        raise ValueError(f"hue strength must be <= 0.5, got {hue}")
    return tuple((max(0.0, 1.0 - s), 1.0 + s) for s in (brightness, contrast, saturation)) + (
        (-hue, hue),
    )


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x * f, clamped; f (B,)."""
    return (f.view(-1, 1, 1, 1) * x).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the per-image mean of the grey image: f * x + (1 - f) * mean, clamped."""
    f = f.view(-1, 1, 1, 1)
    mean = rgb_to_gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the grey image: f * x + (1 - f) * gray, clamped. No-op on 1 channel."""
    if x.shape[-3] == 1:
        return x
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * rgb_to_gray(x)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` turns (B,), value and saturation kept. No-op on 1 channel.

    HSV, as torchvision's adjust_hue: hue in sixths from the max channel (ties: r, then g,
    then b), shifted modulo 1, back to RGB through the closed form
    ``c_n = v - (v - min) * clamp(min(k_n, 4 - k_n), 0, 1)``, ``k_n = (n + 6 h) mod 6`` with
    n = 5, 3, 1 for r, g, b.
    """
    if x.shape[-3] == 1:
        return x
    r, g, b = x.unbind(-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    c = maxc - minc
    cd = torch.where(c > 0, c, torch.ones_like(c))
    h6 = torch.where(
        maxc == r, (g - b) / cd, torch.where(maxc == g, (b - r) / cd + 2, (r - g) / cd + 4)
    )  # hue in sixths, in (-1, 5]
    h6 = h6 + 6 * shift.view(-1, 1, 1)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + h6.unsqueeze(-3), 6)
    return maxc.unsqueeze(-3) - c.unsqueeze(-3) * torch.minimum(k, 4 - k).clamp(0, 1)


_JITTER_FNS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(
    x: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
    hue: float = 0.1, p: float = 0.8, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """With probability p, brightness, contrast, saturation and hue jitter in a random order.

    Factors are uniform in :func:`jitter_ranges`; a zero strength gives the identity factor
    (1, or 0 for hue). On 1-channel images saturation and hue are no-ops (as in torchvision).
    params: ``jitter_applied`` (B,) bool; ``jitter_factors`` (B, 4) float32 (brightness,
    contrast, saturation factors, hue shift in turns); ``jitter_order`` (B, 4) int64, the op
    ids (0 brightness, 1 contrast, 2 saturation, 3 hue) in the order they are applied.
    """
    _check_images(x)
    b = x.shape[0]
    ranges = jitter_ranges(brightness, contrast, saturation, hue)
    applied = _bernoulli(b, p, generator)
    u = torch.rand(b, 4, generator=generator, dtype=torch.float64)
    lo = torch.tensor([r[0] for r in ranges], dtype=torch.float64)
    hi = torch.tensor([r[1] for r in ranges], dtype=torch.float64)
    factors = lo + (hi - lo) * u
    order = torch.rand(b, 4, generator=generator).argsort(dim=1)  # a random permutation each
    params = {
        "jitter_applied": applied.to(x.device),
        "jitter_factors": factors.to(device=x.device, dtype=torch.float32),
        "jitter_order": order.to(x.device),
    }
    return apply_color_jitter(x, params), params


def apply_color_jitter(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply recorded jitter; images with identity hue shift (0) skip the hue round trip."""
    applied = params["jitter_applied"].to(x.device)
    factors = params["jitter_factors"].to(device=x.device, dtype=x.dtype)
    order = params["jitter_order"].to(x.device)
    out = x
    for pos in range(4):
        for op in range(4):
            sel = applied & (order[:, pos] == op)
            if op == 3:
                sel = sel & (factors[:, 3] != 0)
            idx = sel.nonzero()[:, 0]
            if idx.numel() == 0:
                continue
            if out is x:
                out = x.clone()
            out[idx] = _JITTER_FNS[op](out[idx], factors[idx, op])
    return out


# --- grayscale ---------------------------------------------------------------------------------

def random_grayscale(
    x: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Replace by the luma, repeated over the channels, with probability p (1 channel: no-op).

    params: ``gray_applied`` (B,) bool.
    """
    _check_images(x)
    params = {"gray_applied": _bernoulli(x.shape[0], p, generator).to(x.device)}
    return apply_grayscale(x, params), params


def apply_grayscale(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    if x.shape[-3] == 1:
        return x
    a = params["gray_applied"].to(x.device)
    if not bool(a.any()):
        return x
    return torch.where(a[:, None, None, None], rgb_to_gray(x).expand_as(x), x)


# --- Gaussian blur -----------------------------------------------------------------------------

def blur_kernel_size(image_size: int) -> int:
    """Odd kernel size of about 10% of the image side (SimCLR): 224 -> 23, 96 -> 9, 32 -> 3."""
    return int(0.1 * image_size) // 2 * 2 + 1


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B, k) normalised 1-D Gaussians on the taps -(k-1)/2 .. (k-1)/2, one per sigma (B,)."""
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(
    x: torch.Tensor, p: float = 0.5, sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Gaussian blur with probability p, sigma uniform in ``sigma``, per-image kernels.

    ``kernel_size`` defaults to :func:`blur_kernel_size` of min(H, W). Reflect padding and a
    separable (vertical, then horizontal) grouped convolution: torchvision's gaussian_blur up
    to float rounding. params: ``blur_applied`` (B,) bool, ``blur_sigma`` (B,) float32 (the
    draw is recorded for every image; it only matters where applied).
    """
    _check_images(x)
    b = x.shape[0]
    applied = _bernoulli(b, p, generator)
    s = _uniform((b,), sigma[0], sigma[1], generator)
    params = {
        "blur_applied": applied.to(x.device),
        "blur_sigma": s.to(device=x.device, dtype=torch.float32),
    }
    return apply_gaussian_blur(x, params, kernel_size), params


def apply_gaussian_blur(x: torch.Tensor, params: dict[str, torch.Tensor],
                        kernel_size: int | None = None) -> torch.Tensor:
    _, c, hh, ww = x.shape
    k = blur_kernel_size(min(hh, ww)) if kernel_size is None else int(kernel_size)
    if k % 2 != 1 or k < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {k}")
    idx = params["blur_applied"].to(x.device).nonzero()[:, 0]
    if k == 1 or idx.numel() == 0:
        return x
    n = idx.numel()
    sig = params["blur_sigma"].to(device=x.device, dtype=x.dtype)[idx]
    ker = gaussian_kernels(sig, k).repeat_interleave(c, dim=0)  # (n*C, k)
    pad = k // 2
    y = F.pad(x[idx], (pad, pad, pad, pad), mode="reflect").reshape(1, n * c, hh + 2 * pad,
                                                                     ww + 2 * pad)
    y = F.conv2d(y, ker[:, None, :, None], groups=n * c)
    y = F.conv2d(y, ker[:, None, None, :], groups=n * c)
    out = x.clone()
    out[idx] = y.reshape(n, c, hh, ww)
    return out


# --- solarisation ------------------------------------------------------------------------------

def random_solarize(
    x: torch.Tensor, p: float = 0.2, threshold: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """With probability p invert the pixels >= threshold (x -> 1 - x).

    params: ``solarize_applied`` (B,) bool.
    """
    _check_images(x)
    params = {"solarize_applied": _bernoulli(x.shape[0], p, generator).to(x.device)}
    return apply_solarize(x, params, threshold), params


def apply_solarize(x: torch.Tensor, params: dict[str, torch.Tensor],
                   threshold: float = 0.5) -> torch.Tensor:
    a = params["solarize_applied"].to(x.device)
    if not bool(a.any()):
        return x
    return torch.where(a[:, None, None, None] & (x >= threshold), 1 - x, x)


# --- rotation by multiples of 90 degrees -------------------------------------------------------

def random_rotation90(
    x: torch.Tensor, p: float = 1.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """With probability p rotate by k * 90 degrees counter-clockwise, k uniform in {0,1,2,3}
    (so p = 1 is the 4-way rotation of RotNet); otherwise k = 0. Square images only.

    params: ``rotation_k`` (B,) int64.
    """
    b = x.shape[0]
    applied = _bernoulli(b, p, generator)
    k = torch.randint(0, 4, (b,), generator=generator)
    params = {"rotation_k": torch.where(applied, k, torch.zeros_like(k)).to(x.device)}
    return apply_rotation90(x, params), params


def apply_rotation90(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation by 90 degrees needs square images, got {tuple(x.shape)}")
    k = params["rotation_k"].to(x.device)
    out = x
    for r in (1, 2, 3):
        idx = (k == r).nonzero()[:, 0]
        if idx.numel():
            if out is x:
                out = x.clone()
            out[idx] = torch.rot90(x[idx], r, dims=(-2, -1))
    return out


# --- replay ------------------------------------------------------------------------------------

def apply_params(
    x: torch.Tensor, params: dict[str, torch.Tensor], *, size: int | tuple[int, int] | None = None,
    blur_kernel_size: int | None = None, solarize_threshold: float = 0.5,
) -> torch.Tensor:
    """Replay every op whose params are present, in the fixed order crop -> flip -> jitter ->
    grayscale -> blur -> solarize -> rotation. ``size``: the crop's output size (default: the
    input size); the other keywords must match the settings the params were drawn with."""
    if "crop_box" in params:
        x = apply_resized_crop(x, params, size if size is not None else tuple(x.shape[-2:]))
    if "flip" in params:
        x = apply_horizontal_flip(x, params)
    if "jitter_applied" in params:
        x = apply_color_jitter(x, params)
    if "gray_applied" in params:
        x = apply_grayscale(x, params)
    if "blur_applied" in params:
        x = apply_gaussian_blur(x, params, blur_kernel_size)
    if "solarize_applied" in params:
        x = apply_solarize(x, params, solarize_threshold)
    if "rotation_k" in params:
        x = apply_rotation90(x, params)
    return x
