"""Deterministic synthetic benchmarks with exact ground-truth evidence masks.

No public data set can be downloaded where vitlens runs, so it ships its own generators. Every benchmark
renders 112x112 RGB images (a 14x14 grid of 8-pixel patches for a small ViT) together with a mask of the
pixels that carry the class-determining evidence, so that attribution maps can be scored for localisation.

Determinism
    Sample ``index`` of ``(seed, split)`` is a pure function of ``(benchmark, seed, split, index)``: each
    part of the scene (label, background, evidence, marker, sensor noise) draws from its own generator,
    ``np.random.default_rng([bench_id, seed, split_id, index, stream])``. Samples can therefore be made
    lazily, in any order, in data-loader workers, and the three splits never share an image.

Exactness of the masks
    The scene is composed in a fixed order: background first, then the evidence object on top, then only
    per-pixel operations (illumination, gain, noise, quantisation). ``Benchmark.sample(..., evidence=False)``
    renders the same scene without the evidence (same random streams for everything else), and the pixels
    that differ between the two renderings lie inside ``Sample.mask`` (plus, for ``ultrasound``, the
    posterior acoustic region in ``extra_masks['posterior']``). The mask is the full anti-aliased footprint
    of the evidence object (every pixel it covers with non-zero opacity).

Benchmarks
    ``cells`` -- modelled on peripheral blood smear classification (e.g. the PBC data set of Acevedo et
    al.). A pale, pinkish, unevenly lit background with 15-35 red blood cells (biconcave discs with a paler
    centre, radius 5-9 px, slightly elliptical, overlapping) and a few platelets, rendered in optical
    density with per-image stain variation (Beer-Lambert: overlapping cells look darker). One white blood
    cell (radius ~11-17 px), drawn on top, sets the class: ``neutrophil`` (3-5 dark lobes joined by thin
    strands, pale lilac finely granular cytoplasm), ``lymphocyte`` (round dense nucleus filling most of a
    smaller cell, thin sky-blue rim), ``monocyte`` (large kidney- or horseshoe-shaped lacy nucleus, grey-blue
    vacuolated cytoplasm), ``eosinophil`` (two lobes, cytoplasm packed with coarse orange-red granules).
    The nucleus stain is the same for all classes; shape and texture tell them apart.
    Mask: the white cell, cytoplasm and nucleus. Simplifications: no cell-edge refraction halo, granules are
    thresholded noise, the white cell occludes the red cells below it, no smudge cells or artefacts.

    ``ultrasound`` -- modelled on breast ultrasound (the BUSI data set of Al-Dhabyani et al.). Grayscale
    B-mode replicated into three channels: Rayleigh speckle (magnitude of a smoothed complex Gaussian field,
    laterally elongated) multiplying an echogenicity map of wavy horizontal layers (bright skin line,
    hypoechoic subcutaneous fat with elongated fat lobules, bright heterogeneous fibroglandular tissue,
    striated pectoral muscle), depth-dependent gain, random overall gain, power-law display compression and
    a rectangular or trapezoidal (linear probe) field with black outside. Classes: ``normal`` (no lesion),
    ``benign`` (smooth oval, wider-than-tall, nearly anechoic lesion with a thin bright capsule and
    posterior acoustic enhancement), ``malignant`` (irregular, spiculated, taller-than-wide hypoechoic
    lesion with an echogenic halo and posterior acoustic shadowing). Fat lobules, which resemble small
    flat lesions, appear in every class.
    Mask: the lesion only (all False for ``normal``). The posterior enhancement or shadow below the lesion is
    *not* part of the mask; the pixels it changes are given separately as ``extra_masks['posterior']``.
    Simplifications: no beam-forming blur, no reverberation or side-lobe artefacts, no calipers or text.

    ``shortcut`` -- a controlled spurious-correlation benchmark. An object whose shape is the class
    (``circle``, ``square``, ``triangle``, ``cross``; equal expected area, random size, position, rotation
    and a colour from a palette shared by all classes) lies on a smoothly textured, noisy background with a
    few distractor blobs of the same palette. A 6x6 marker (white square with a black border) sits in one
    of the four corners; the corner encodes a class (0 top-left, 1 top-right, 2 bottom-left, 3
    bottom-right). In ``train`` and ``val`` the marker agrees with the class in 95% of samples (a different,
    uniformly chosen class otherwise); in ``test`` its class is uniform and independent of the label.
    Mask: the object; ``extra_masks['marker']``: the marker; ``meta['marker_class']`` and
    ``meta['marker_consistent']`` record it.

In every benchmark the label is drawn from its own random stream (classes are balanced in expectation),
and position, size, stain or gain are randomised so that the mean colour of an image does not reveal the
class.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from vitlens.errors import DataError

__all__ = [
    "BENCHMARKS",
    "IMAGE_SIZE",
    "SPLITS",
    "Benchmark",
    "Sample",
    "generate",
    "generate_arrays",
    "get_benchmark",
]

IMAGE_SIZE = 112
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

# Independent random streams of one sample.
_LABEL, _BACKGROUND, _EVIDENCE, _MARKER, _NOISE = range(5)

_S = IMAGE_SIZE
_F32 = np.float32


@dataclass(frozen=True, eq=False)
class Sample:
    """One rendered image with its label and exact evidence masks."""

    image: np.ndarray  # uint8 [112, 112, 3] RGB
    label: int
    mask: np.ndarray  # bool [112, 112], class-determining evidence (may be all False)
    bbox: tuple[int, int, int, int] | None  # (x0, y0, x1, y1), inclusive-exclusive; None if mask empty
    extra_masks: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


class _Streams:
    """Lazily created, independent generators of one sample, keyed by stream id."""

    def __init__(self, bench_id: int, seed: int, split_id: int, index: int) -> None:
        self._key = [bench_id, seed, split_id, index]
        self._cache: dict[int, np.random.Generator] = {}

    def __call__(self, stream: int) -> np.random.Generator:
        if stream not in self._cache:
            self._cache[stream] = np.random.default_rng([*self._key, stream])
        return self._cache[stream]


# --------------------------------------------------------------------------------------------------------
# Geometry helpers: signed distance fields evaluated on small windows of the image grid.
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """An image window [y0:y1, x0:x1] with pixel offsets (dy, dx) from a centre, broadcastable."""

    y0: int
    y1: int
    x0: int
    x1: int
    dy: np.ndarray  # [h, 1]
    dx: np.ndarray  # [1, w]

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def _window(cy: float, cx: float, half: float, size: int = _S) -> _Window:
    y0, y1 = max(0, math.floor(cy - half)), min(size, math.ceil(cy + half) + 1)
    x0, x1 = max(0, math.floor(cx - half)), min(size, math.ceil(cx + half) + 1)
    dy = (np.arange(y0, y1, dtype=_F32) - _F32(cy))[:, None]
    dx = (np.arange(x0, x1, dtype=_F32) - _F32(cx))[None, :]
    return _Window(y0, y1, x0, x1, dy, dx)


def _rotate(dy: np.ndarray, dx: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) in a frame rotated by ``theta``: u along the rotated x axis."""
    c, s = _F32(math.cos(theta)), _F32(math.sin(theta))
    return dx * c + dy * s, dy * c - dx * s


def _sdf_ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (exact on the boundary to first order)."""
    f = (u / a) ** 2 + (v / b) ** 2 - 1.0
    g = 2.0 * np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
    return f / np.maximum(g, 1e-3)


def _sdf_circle(dy: np.ndarray, dx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return np.sqrt((dy - cy) ** 2 + (dx - cx) ** 2) - r


def _sdf_segment(
    dy: np.ndarray, dx: np.ndarray, a: tuple[float, float], b: tuple[float, float], radius: float
) -> np.ndarray:
    """Signed distance to a capsule: the segment a-b (points as (y, x)) thickened by ``radius``."""
    by, bx = b[0] - a[0], b[1] - a[1]
    py, px = dy - a[0], dx - a[1]
    h = np.clip((py * by + px * bx) / max(by * by + bx * bx, 1e-6), 0.0, 1.0)
    return np.sqrt((py - h * by) ** 2 + (px - h * bx) ** 2) - radius


def _sdf_box(u: np.ndarray, v: np.ndarray, hu: float, hv: float) -> np.ndarray:
    qu, qv = np.abs(u) - hu, np.abs(v) - hv
    outside = np.sqrt(np.maximum(qu, 0.0) ** 2 + np.maximum(qv, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qu, qv), 0.0)


def _sdf_ngon(u: np.ndarray, v: np.ndarray, n: int, circumradius: float) -> np.ndarray:
    """Signed distance (exact inside) to a regular n-gon with an edge normal along +u."""
    sector = 2.0 * math.pi / n
    ang = np.mod(np.arctan2(v, u) + math.pi / n, sector) - math.pi / n
    return np.sqrt(u * u + v * v) * np.cos(ang) - circumradius * math.cos(math.pi / n)


def _sdf_radial(dy: np.ndarray, dx: np.ndarray, radius: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Star-shaped region r < radius(theta); the result is a radial, not Euclidean, distance."""
    return np.sqrt(dy * dy + dx * dx) - radius(np.arctan2(dy, dx))


def _harmonics(rng: np.random.Generator, orders: range, amplitude: float) -> Callable[[np.ndarray], np.ndarray]:
    """A random smooth periodic function of angle: sum of cosines with amplitude ~ 1/order."""
    amps = [rng.uniform(0.0, amplitude) / k**0.5 for k in orders]
    phases = [rng.uniform(0.0, 2.0 * math.pi) for _ in orders]

    def fn(theta: np.ndarray) -> np.ndarray:
        out = np.zeros_like(theta)
        for k, a, p in zip(orders, amps, phases, strict=True):
            out += a * np.cos(k * theta + p)
        return out

    return fn


def _alpha(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (1 inside, 0 outside, linear over one pixel across the boundary)."""
    return np.clip(0.5 - sdf, 0.0, 1.0).astype(_F32, copy=False)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _smooth_noise(rng: np.random.Generator, lo_h: int, lo_w: int, out_h: int = _S, out_w: int = _S) -> np.ndarray:
    """Band-limited noise: a (lo_h, lo_w) Gaussian field upsampled bicubically to (out_h, out_w)."""
    low = rng.standard_normal((lo_h, lo_w), dtype=_F32)
    return np.asarray(Image.fromarray(low).resize((out_w, out_h), Image.BICUBIC))


def _fine_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Uniform noise averaged over 2x2 pixels: grain of ~2 px, values in [0, 1], mean 0.5."""
    u = rng.random((h + 1, w + 1), dtype=_F32)
    return 0.25 * (u[:-1, :-1] + u[1:, :-1] + u[:-1, 1:] + u[1:, 1:])


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _unit_grid(size: int = _S) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates scaled to [-1, 1], shapes [size, 1] and [1, size]."""
    t = np.linspace(-1.0, 1.0, size, dtype=_F32)
    return t[:, None], t[None, :]


# --------------------------------------------------------------------------------------------------------
# Benchmark base class
# --------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DataError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return SPLITS[split]


@dataclass(frozen=True)
class _Scene:
    """What a generator renders: the image, its label, masks and metadata."""

    image: np.ndarray
    label: int
    mask: np.ndarray
    extra_masks: dict[str, np.ndarray]
    meta: dict


class Benchmark:
    """A synthetic benchmark: a pure function from (seed, split, index) to a :class:`Sample`."""

    name: str = ""
    classes: tuple[str, ...] = ()
    description: str = ""
    extra_mask_keys: tuple[str, ...] = ()
    _bench_id: int = 0

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def sample(self, index: int, seed: int = 0, split: str = "train", *, evidence: bool = True) -> Sample:
        """Render sample ``index`` of ``(seed, split)``.

        With ``evidence=False`` the same scene is rendered without the class evidence (and without its
        side effects such as acoustic shadowing); label, masks and metadata still describe where the
        evidence would be. This counterfactual is how the masks are verified.
        """
        streams = _Streams(self._bench_id, _check_int("seed", seed), _split_id(split), _check_int("index", index))
        scene = self._render(streams, split, evidence)
        meta = {**scene.meta, "evidence_rendered": bool(evidence)}
        return Sample(scene.image, scene.label, scene.mask, _bbox(scene.mask), scene.extra_masks, meta)

    def _render(self, streams: _Streams, split: str, evidence: bool) -> _Scene:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, classes={self.classes!r})"


# --------------------------------------------------------------------------------------------------------
# cells: peripheral blood smear
# --------------------------------------------------------------------------------------------------------

# Optical-density (absorbance) vectors per RGB channel; image = illumination * exp(-OD).
_OD_HEMATOXYLIN = np.array([0.95, 1.20, 0.42], _F32)  # azure/methylene blue + eosin: dark purple nuclei
_OD_EOSIN = np.array([0.08, 0.55, 0.30], _F32)  # pink: red cells, plasma
_OD_BASOPHIL = np.array([0.55, 0.24, 0.07], _F32)  # sky-blue RNA-rich cytoplasm
_OD_GRANULE = np.array([0.05, 0.62, 1.15], _F32)  # orange-red eosinophil granules


@dataclass(frozen=True)
class _Stain:
    hema: np.ndarray
    eosin: np.ndarray
    baso: np.ndarray
    granule: np.ndarray
    illumination: np.ndarray  # [3] RGB of the empty field
    rbc_density: float
    pallor: float


def _draw_stain(rng: np.random.Generator) -> _Stain:
    def jitter(vec: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return (vec * rng.uniform(0.88, 1.12, 3) * rng.uniform(lo, hi)).astype(_F32)

    illumination = np.array([244.0, 238.0, 236.0]) * rng.uniform(0.94, 1.04, 3) * rng.uniform(0.88, 1.04)
    return _Stain(
        hema=jitter(_OD_HEMATOXYLIN, 0.8, 1.2),
        eosin=jitter(_OD_EOSIN, 0.7, 1.3),
        baso=jitter(_OD_BASOPHIL, 0.8, 1.2),
        granule=jitter(_OD_GRANULE, 0.8, 1.2),
        illumination=illumination.astype(_F32),
        rbc_density=float(rng.uniform(0.75, 1.35)),
        pallor=float(rng.uniform(0.5, 0.8)),
    )


@functools.lru_cache(maxsize=2048)
def _rbc_sprite(radius2: int, ell20: int, angle12: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and central-pallor profile of a red cell (radius in half pixels, quantised shape)."""
    r, ell, theta = radius2 / 2.0, 1.0 + ell20 / 20.0, angle12 * math.pi / 12.0
    half = math.ceil(r * ell) + 1
    win = _window(half, half, half, size=2 * half + 1)
    u, v = _rotate(win.dy, win.dx, theta)
    a, b = r * math.sqrt(ell), r / math.sqrt(ell)
    cover = _alpha(_sdf_ellipse(u, v, a, b))
    rho2 = (u / a) ** 2 + (v / b) ** 2
    pallor = (np.exp(-((rho2 / 0.3) ** 2)) * cover).astype(_F32)
    rim = (np.exp(-((np.sqrt(rho2) - 0.85) ** 2) / 0.02) * cover).astype(_F32)
    return cover, (pallor - 0.25 * rim).astype(_F32)


def _stamp(od: np.ndarray, cy: int, cx: int, sprite: np.ndarray, vec: np.ndarray) -> None:
    """od[window] += sprite * vec, with the sprite centred at (cy, cx) and clipped to the image."""
    h, w = sprite.shape
    y0, x0 = cy - h // 2, cx - w // 2
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1, sx1 = min(h, od.shape[0] - y0), min(w, od.shape[1] - x0)
    if sy1 <= sy0 or sx1 <= sx0:
        return
    od[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1] += sprite[sy0:sy1, sx0:sx1, None] * vec


def _smear_background(rng: np.random.Generator, stain: _Stain) -> tuple[np.ndarray, int]:
    """Optical density of plasma, red cells and platelets; returns (od [112,112,3], n_red_cells)."""
    od = np.empty((_S, _S, 3), _F32)
    od[:] = stain.eosin * _F32(rng.uniform(0.02, 0.08))
    od += (_smooth_noise(rng, 6, 6) * _F32(0.012))[..., None] * stain.eosin
    n_rbc = int(rng.integers(15, 36))
    rbc_vec = (stain.eosin * stain.rbc_density).astype(_F32)
    for _ in range(n_rbc):
        key = (int(rng.integers(10, 19)), int(rng.integers(0, 5)), int(rng.integers(0, 12)))
        cover, pallor = _rbc_sprite(*key)
        sprite = cover * _F32(rng.uniform(0.85, 1.15)) - pallor * _F32(stain.pallor)
        _stamp(od, int(rng.integers(-4, _S + 4)), int(rng.integers(-4, _S + 4)), sprite, rbc_vec)
    for _ in range(int(rng.integers(0, 5))):
        r2 = int(rng.integers(3, 6))
        cover, _unused = _rbc_sprite(r2, int(rng.integers(0, 5)), int(rng.integers(0, 12)))
        _stamp(od, int(rng.integers(0, _S)), int(rng.integers(0, _S)), cover, stain.hema * _F32(0.55))
    return od, n_rbc


_WBC_RADIUS = {0: (13.0, 16.0), 1: (11.5, 14.0), 2: (14.0, 17.0), 3: (13.0, 16.0)}


def _nucleus_neutrophil(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """3-5 lobes along a curved path, joined by thin chromatin strands."""
    n = int(rng.integers(3, 6))
    path_r = r * rng.uniform(0.32, 0.45)
    span = rng.uniform(2.6, 4.4)
    start = rng.uniform(0, 2 * math.pi)
    off = rng.normal(0.0, 0.08 * r, 2)
    angles = start + np.linspace(0.0, span, n) + rng.normal(0.0, 0.15, n)
    radii = path_r * rng.uniform(0.8, 1.2, n)
    centres = [(off[0] + q * math.sin(t), off[1] + q * math.cos(t)) for q, t in zip(radii, angles, strict=True)]
    sdf = np.full(np.broadcast_shapes(dy.shape, dx.shape), np.inf, _F32)
    for cy, cx in centres:
        sdf = np.minimum(sdf, _sdf_circle(dy, dx, cy, cx, r * rng.uniform(0.25, 0.31)))
    strand = rng.uniform(0.7, 1.1)
    for a, b in itertools.pairwise(centres):
        sdf = np.minimum(sdf, _sdf_segment(dy, dx, a, b, strand))
    return sdf


def _nucleus_lymphocyte(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """A large, round, slightly eccentric nucleus filling most of the cell."""
    a = r * rng.uniform(0.76, 0.86)
    b = a * rng.uniform(0.88, 1.0)
    t = rng.uniform(0, 2 * math.pi)
    shift = r * rng.uniform(0.0, 0.12)
    u, v = _rotate(dy - shift * math.sin(t), dx - shift * math.cos(t), rng.uniform(0, math.pi))
    return _sdf_ellipse(u, v, a, b)


def _nucleus_monocyte(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """A large kidney-shaped (indented ellipse) or horseshoe-shaped (thick arc) nucleus."""
    u, v = _rotate(dy, dx, rng.uniform(0, 2 * math.pi))
    if rng.random() < 0.55:
        a, b = r * rng.uniform(0.62, 0.72), r * rng.uniform(0.5, 0.58)
        shift = r * rng.uniform(0.0, 0.1)
        indent_r = r * rng.uniform(0.3, 0.42)
        indent = _sdf_circle(v, u, b * rng.uniform(0.95, 1.2) + shift, 0.0, indent_r)
        return np.maximum(_sdf_ellipse(u, v + shift, a, b), -indent)
    arc_r, half_span, thick = r * rng.uniform(0.36, 0.46), rng.uniform(1.7, 2.3), r * rng.uniform(0.2, 0.26)
    ang = np.arctan2(v, u)
    on_arc = np.abs(np.sqrt(u * u + v * v) - arc_r) - thick
    tips = [(arc_r * math.sin(s), arc_r * math.cos(s)) for s in (-half_span, half_span)]
    end_caps = np.minimum(*(_sdf_circle(v, u, ty, tx, thick) for ty, tx in tips))
    return np.where(np.abs(ang) <= half_span, on_arc, end_caps).astype(_F32)


def _nucleus_eosinophil(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """Two round lobes (spectacle shape) joined by a strand."""
    u, v = _rotate(dy, dx, rng.uniform(0, 2 * math.pi))
    d, bend = r * rng.uniform(0.3, 0.4), r * rng.uniform(0.0, 0.2)
    lobes = [(bend, -d), (bend, d)]
    sdf = np.minimum(*(_sdf_circle(v, u, ly, lx, r * rng.uniform(0.3, 0.36)) for ly, lx in lobes))
    return np.minimum(sdf, _sdf_segment(v, u, lobes[0], lobes[1], rng.uniform(0.8, 1.3)))


_NUCLEUS = {0: _nucleus_neutrophil, 1: _nucleus_lymphocyte, 2: _nucleus_monocyte, 3: _nucleus_eosinophil}


def _cytoplasm_od(rng: np.random.Generator, label: int, stain: _Stain, shape: tuple[int, int]) -> np.ndarray:
    """Optical density of the white cell's cytoplasm (with granules or vacuoles) over its window."""
    grain = _fine_texture(rng, *shape)[..., None]
    if label == 0:  # pale lilac, fine faint granules
        base = 0.14 * stain.eosin + 0.05 * stain.hema
        return (base + np.clip((grain - 0.5) * 6.0, 0.0, 1.0) * (0.08 * stain.hema)).astype(_F32)
    if label == 1:  # sky blue
        return (np.ones((*shape, 1), _F32) * (rng.uniform(0.45, 0.75) * stain.baso)).astype(_F32)
    if label == 2:  # grey-blue, ground-glass, a few vacuoles
        base = 0.45 * stain.baso + 0.18 * stain.eosin + 0.04 * stain.hema
        vacuoles = np.clip((grain - 0.62) * 8.0, 0.0, 1.0)
        return (base * (1.0 - 0.6 * vacuoles) * (0.9 + 0.2 * grain)).astype(_F32)
    granules = np.clip((grain - 0.42) * 8.0, 0.0, 1.0)  # eosinophil: coarse orange-red granules
    return (0.06 * stain.eosin + granules * (rng.uniform(0.45, 0.6) * stain.granule)).astype(_F32)


def _white_cell(rng: np.random.Generator, label: int, stain: _Stain) -> tuple[_Window, np.ndarray, np.ndarray, float]:
    """Window, coverage and optical density of the white cell; also its nominal radius."""
    r = float(rng.uniform(*_WBC_RADIUS[label]))
    outline = _harmonics(rng, range(2, 5), 0.06)
    half = r * 1.1 + 2.0
    cy, cx = (float(rng.uniform(half + 1.0, _S - half - 2.0)) for _ in range(2))
    win = _window(cy, cx, half)
    cell_sdf = _sdf_radial(win.dy, win.dx, lambda th: r * (1.0 + outline(th)))
    cover = _alpha(cell_sdf)
    nuc_sdf = np.maximum(_NUCLEUS[label](rng, win.dy, win.dx, r), cell_sdf + 1.5)
    nuc_cover = _alpha(nuc_sdf)[..., None]
    shape = cover.shape
    density = {0: 1.0, 1: 1.02, 2: 0.9, 3: 1.0}[label] * rng.uniform(0.88, 1.12)
    chromatin = _F32(density) * (0.72 + 0.56 * _fine_texture(rng, *shape))
    nucleus = chromatin[..., None] * stain.hema
    cyto = _cytoplasm_od(rng, label, stain, shape)
    return win, cover, (cyto + nuc_cover * (nucleus - cyto)).astype(_F32), r


class CellsBenchmark(Benchmark):
    name = "cells"
    classes = ("neutrophil", "lymphocyte", "monocyte", "eosinophil")
    description = (
        "Peripheral blood smear (modelled on PBC): one white blood cell among red cells; "
        "its type is the class. Mask: the white cell."
    )
    _bench_id = 1

    def _render(self, streams: _Streams, split: str, evidence: bool) -> _Scene:
        label = int(streams(_LABEL).integers(self.n_classes))
        bg = streams(_BACKGROUND)
        stain = _draw_stain(bg)
        od, n_rbc = _smear_background(bg, stain)
        gy, gx = bg.uniform(-0.06, 0.06, 2)
        yy, xx = _unit_grid()
        light = (1.0 + _F32(gy) * yy + _F32(gx) * xx - _F32(0.04) * (yy * yy + xx * xx))[..., None]
        win, cover, cell_od, radius = _white_cell(streams(_EVIDENCE), label, stain)
        mask = np.zeros((_S, _S), bool)
        mask[win.slices] = cover > 0
        if evidence:
            region = od[win.slices]
            region += cover[..., None] * (cell_od - region)
        noise = streams(_NOISE)
        sigma = _F32(noise.uniform(1.5, 3.5))
        img = light * stain.illumination * np.exp(-od) + noise.standard_normal((_S, _S, 3), dtype=_F32) * sigma
        meta = {"n_red_cells": n_rbc, "wbc_radius": round(radius, 2)}
        return _Scene(_to_uint8(img), label, mask, {}, meta)


# --------------------------------------------------------------------------------------------------------
# ultrasound: breast B-mode
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anatomy:
    echo: np.ndarray  # [112, 112] echogenicity map (before speckle, gain)
    field: np.ndarray  # bool [112, 112], imaged region
    top: int
    bottom: int
    left: np.ndarray  # [112] first column of the field per row
    right: np.ndarray  # [112] last column (exclusive) per row
    fat_bottom: float  # mean depth of the fat/gland boundary
    gland_bottom: float


def _wavy(rng: np.random.Generator, base: float, amp: float) -> np.ndarray:
    """A smooth random boundary depth per column."""
    x = np.arange(_S, dtype=_F32)
    out = np.full(_S, base, _F32)
    for period in (rng.uniform(60, 160), rng.uniform(25, 60)):
        out += _F32(rng.uniform(0.3, 1.0) * amp) * np.sin(2 * np.pi * x / _F32(period) + _F32(rng.uniform(0, 6.3)))
        amp *= 0.5
    return out


def _us_field(rng: np.random.Generator) -> tuple[np.ndarray, int, int, np.ndarray, np.ndarray]:
    """Rectangular or trapezoidal linear-probe field: (mask, top, bottom, left[y], right[y])."""
    top, bottom = int(rng.integers(0, 7)), _S - int(rng.integers(0, 6))
    left0, right0 = int(rng.integers(2, 13)), _S - int(rng.integers(2, 13))
    slope = rng.uniform(0.05, 0.12) if rng.random() < 0.35 else 0.0
    y = np.arange(_S, dtype=_F32)
    spread = slope * np.maximum(y - top, 0) - slope * (bottom - top) / 2
    left = np.clip(np.rint(left0 + 6 - spread), 0, _S).astype(np.int64) if slope else np.full(_S, left0)
    right = np.clip(np.rint(right0 - 6 + spread), 0, _S).astype(np.int64) if slope else np.full(_S, right0)
    cols = np.arange(_S)[None, :]
    rows = np.arange(_S)[:, None]
    field_mask = (cols >= left[:, None]) & (cols < right[:, None]) & (rows >= top) & (rows < bottom)
    return field_mask, top, bottom, left, right


def _fat_lobules(rng: np.random.Generator, echo: np.ndarray, top: float, bottom: float) -> None:
    """Elongated hypoechoic fat lobules with bright septa, in place (they occur in every class)."""
    for _ in range(int(rng.integers(1, 5))):
        a, b = rng.uniform(6, 13), rng.uniform(2.5, 5.0)
        cy = rng.uniform(top + b + 1, max(top + b + 1.5, bottom - b))
        cx = rng.uniform(8, _S - 8)
        win = _window(cy, cx, a + 2)
        u, v = _rotate(win.dy, win.dx, rng.uniform(-0.25, 0.25))
        sdf = _sdf_ellipse(u, v, a, b)
        inside = _alpha(sdf)
        septum = np.clip(1.0 - np.abs(sdf + 0.3), 0.0, 1.0)
        region = echo[win.slices]
        region *= 1.0 - inside * _F32(rng.uniform(0.35, 0.6))
        region += septum * _F32(0.25)


def _anatomy(rng: np.random.Generator) -> _Anatomy:
    field_mask, top, bottom, left, right = _us_field(rng)
    skin = _wavy(rng, top + rng.uniform(2, 4), 1.0)
    fat_bottom = _wavy(rng, skin.mean() + rng.uniform(12, 24), 5.0)
    gland_bottom = _wavy(rng, fat_bottom.mean() + rng.uniform(40, 55), 7.0)
    rows = np.arange(_S, dtype=_F32)[:, None]
    gland_tex = _smooth_noise(rng, 10, 7)
    muscle_tex = np.sin(rows * _F32(2 * np.pi / rng.uniform(4, 7)) + _smooth_noise(rng, 4, 6) * 1.5)
    echo = np.where(rows < fat_bottom[None, :], _F32(rng.uniform(0.33, 0.45)), _F32(0.0))
    gland = (rows >= fat_bottom[None, :]) & (rows < gland_bottom[None, :])
    echo += gland * np.clip(_F32(rng.uniform(0.6, 0.8)) + _F32(0.16) * gland_tex, 0.25, 1.2)
    echo += (rows >= gland_bottom[None, :]) * (_F32(rng.uniform(0.38, 0.5)) + _F32(0.1) * muscle_tex)
    echo += _F32(1.1) * np.exp(-((rows - skin[None, :]) ** 2) / _F32(1.2))  # skin line
    echo += _F32(0.5) * np.exp(-((rows - fat_bottom[None, :]) ** 2) / _F32(2.0))  # superficial fascia
    _fat_lobules(rng, echo, float(skin.mean()) + 3, float(fat_bottom.min()) - 1)
    return _Anatomy(
        echo.astype(_F32),
        field_mask,
        top,
        bottom,
        left,
        right,
        float(fat_bottom.mean()),
        float(gland_bottom.mean()),
    )


_SPECKLE_TILE = 2 * _S


@functools.lru_cache(maxsize=1)
def _speckle_bank(n_tiles: int = 8) -> np.ndarray:
    """Fixed tiles of compounded, laterally elongated Rayleigh speckle, mean 1; [n, 224, 224].

    Each tile is the mean of two envelopes |IFFT(H * W)| of Gaussian-filtered complex white noise (spatial
    compounding). Made once from a fixed seed, so they are the same in every process.
    """
    rng = np.random.default_rng(20240611)
    fy = np.fft.fftfreq(_SPECKLE_TILE)[:, None]
    fx = np.fft.fftfreq(_SPECKLE_TILE)[None, :]
    response = np.exp(-2 * np.pi**2 * ((fy * 0.8) ** 2 + (fx * 1.5) ** 2))
    shape = (n_tiles, 2, _SPECKLE_TILE, _SPECKLE_TILE)
    spectrum = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * response
    envelope = np.abs(np.fft.ifft2(spectrum)).mean(axis=1)
    return (envelope / envelope.mean(axis=(1, 2), keepdims=True)).astype(_F32)


def _speckle(rng: np.random.Generator) -> np.ndarray:
    """A random 112x112 crop (random tile, offset, mirror) of the speckle bank; a read-only view."""
    bank = _speckle_bank()
    tile = bank[int(rng.integers(len(bank)))]
    oy, ox = (int(rng.integers(0, _SPECKLE_TILE - _S + 1)) for _ in range(2))
    crop = tile[oy : oy + _S, ox : ox + _S]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


_SPICULE_REACH = 1.85  # longest spicule, in units of the mean radius (keeps the lesion in its window)


def _spicules(rng: np.random.Generator, r: float) -> Callable[[np.ndarray], np.ndarray]:
    """Radius profile of an irregular, spiculated margin (base radius 1, in units of ``r``)."""
    lumps = _harmonics(rng, range(2, 7), 0.22)
    n = int(rng.integers(6, 13))
    centres = rng.uniform(0, 2 * math.pi, n)
    widths = rng.uniform(0.08, 0.2, n)
    lengths = rng.uniform(0.25, 0.6, n)

    def fn(theta: np.ndarray) -> np.ndarray:
        out = 1.0 + lumps(theta)
        for c, w, length in zip(centres, widths, lengths, strict=True):
            d = np.abs(np.angle(np.exp(1j * (theta - c)))).astype(_F32)
            out += length * np.clip(1.0 - d / w, 0.0, 1.0) ** 2
        return (r * np.minimum(out, _SPICULE_REACH)).astype(_F32)

    return fn


@dataclass(frozen=True)
class _Lesion:
    win: _Window
    cover: np.ndarray  # coverage in the window
    echo: np.ndarray  # lesion echogenicity in the window
    factor: float  # posterior enhancement (> 1) or shadowing (< 1)
    fade: float  # depth scale (px) of the posterior effect
    width: float
    height: float


def _lesion(rng: np.random.Generator, label: int, anat: _Anatomy) -> _Lesion:
    """A benign (label 1) or malignant (label 2) lesion placed in the glandular layer."""
    if label == 1:
        w = rng.uniform(24, 44)
        h = w * rng.uniform(0.45, 0.72)
        extent_x, extent_y = w / 2 * 1.12, h / 2 * 1.12
    else:
        w = rng.uniform(18, 30)
        h = w * rng.uniform(0.95, 1.4)
        extent_x, extent_y = w / 2 * (_SPICULE_REACH + 0.05), h / 2 * (_SPICULE_REACH + 0.05)
    y_lo = max(anat.fat_bottom - 0.2 * h, anat.top + extent_y + 3)
    y_hi = min(anat.gland_bottom, anat.bottom - extent_y - 8)
    cy = rng.uniform(y_lo, max(y_lo, y_hi))
    cy = min(cy, anat.bottom - extent_y - 3)
    lo_row, hi_row = int(max(0, cy - extent_y)), int(min(_S - 1, cy + extent_y))
    x_lo = max(anat.left[lo_row], anat.left[hi_row]) + extent_x + 2
    x_hi = min(anat.right[lo_row], anat.right[hi_row]) - extent_x - 3
    cx = rng.uniform(x_lo, max(x_lo, x_hi))
    win = _window(cy, cx, max(extent_x, extent_y) + 1)
    u, v = _rotate(win.dy, win.dx, rng.uniform(-0.2, 0.2))
    if label == 1:
        lobulation = _harmonics(rng, range(2, 4), 0.05)
        ru, rv = u / (w / 2), v / (h / 2)
        sdf = (np.sqrt(ru * ru + rv * rv) - 1.0 - lobulation(np.arctan2(rv, ru))) * _F32(min(w, h) / 2)
        interior = _F32(rng.uniform(0.06, 0.16)) * (0.8 + 0.4 * _fine_texture(rng, *sdf.shape))
        capsule = np.exp(-((sdf + 1.0) ** 2) / _F32(0.6)) * _F32(rng.uniform(0.5, 0.9))
        echo, factor, fade = interior + capsule, rng.uniform(1.35, 1.75), rng.uniform(25, 45)
    else:
        scale = math.sqrt(w * h) / 2
        margin = _spicules(rng, scale)
        sdf = _sdf_radial(v * _F32(scale / (h / 2)), u * _F32(scale / (w / 2)), margin)
        interior = _F32(rng.uniform(0.1, 0.24)) * (0.5 + 1.0 * _fine_texture(rng, *sdf.shape))
        halo = np.clip(1.0 - np.abs(sdf + 2.5) / 2.5, 0.0, 1.0) * _F32(rng.uniform(0.25, 0.5))
        echo, factor, fade = interior + halo, rng.uniform(0.22, 0.5), rng.uniform(60, 140)
    cover = _alpha(sdf) * anat.field[win.slices]
    return _Lesion(win, cover, echo.astype(_F32), float(factor), float(fade), float(w), float(h))


def _posterior(lesion: _Lesion, field_mask: np.ndarray) -> np.ndarray:
    """Multiplicative echo factor below the lesion (enhancement or shadow), 1 elsewhere; [112, 112]."""
    win = lesion.win
    present = lesion.cover > 0
    thickness = present.sum(axis=0).astype(_F32)
    weight = np.zeros(_S, _F32)
    weight[win.x0 : win.x1] = np.clip(thickness / max(2.0, 0.5 * thickness.max()), 0.0, 1.0)
    bottom = np.full(_S, _S, np.int64)
    has = thickness > 0
    bottom[win.x0 : win.x1][has] = win.y0 + (present.shape[0] - 1 - np.argmax(present[::-1], axis=0))[has]
    rows = np.arange(_S)[:, None]
    depth = (rows - bottom[None, :]).astype(_F32)
    below = depth > 0
    fade = np.exp(-np.maximum(depth, 0) / _F32(lesion.fade))
    factor = 1.0 + _F32(lesion.factor - 1.0) * weight[None, :] * fade * below
    return np.where(field_mask, factor, _F32(1.0)).astype(_F32)


class UltrasoundBenchmark(Benchmark):
    name = "ultrasound"
    classes = ("normal", "benign", "malignant")
    description = (
        "Breast ultrasound B-mode (modelled on BUSI): no lesion, a smooth oval lesion with posterior "
        "enhancement, or an irregular spiculated lesion with shadowing. Mask: the lesion (posterior "
        "region in extra_masks['posterior'])."
    )
    extra_mask_keys = ("posterior",)
    _bench_id = 2

    def _render(self, streams: _Streams, split: str, evidence: bool) -> _Scene:
        label = int(streams(_LABEL).integers(self.n_classes))
        bg = streams(_BACKGROUND)
        anat = _anatomy(bg)
        echo = anat.echo.copy()
        speckle = _speckle(bg)
        rows = np.arange(_S, dtype=_F32)[:, None]
        tgc = np.exp(-rows * _F32(bg.uniform(0.0, 0.012))) * (1 + _F32(bg.uniform(0.0, 0.006)) * rows)
        gain = _F32(bg.uniform(0.5, 1.5))
        mask = np.zeros((_S, _S), bool)
        posterior = np.zeros((_S, _S), bool)
        meta: dict = {"lesion": label != 0, "posterior_effect": "none"}
        if label != 0:
            lesion = _lesion(streams(_EVIDENCE), label, anat)
            mask[lesion.win.slices] = lesion.cover > 0
            factor = _posterior(lesion, anat.field)
            posterior = (factor != 1.0) & ~mask
            meta.update(
                posterior_effect="enhancement" if label == 1 else "shadowing",
                lesion_width=round(lesion.width, 2),
                lesion_height=round(lesion.height, 2),
            )
            if evidence:
                echo *= factor
                region = echo[lesion.win.slices]
                region += lesion.cover * (lesion.echo - region)
        intensity = np.clip(gain * tgc * echo * speckle * _F32(0.55), 0.0, None) ** _F32(0.7)
        noise = streams(_NOISE)
        img = np.where(anat.field, intensity * _F32(255.0), _F32(0.0))
        img += np.abs(noise.standard_normal((_S, _S), dtype=_F32)) * _F32(noise.uniform(1.0, 3.0))
        gray = _to_uint8(img)
        return _Scene(np.repeat(gray[..., None], 3, axis=2), label, mask, {"posterior": posterior}, meta)


# --------------------------------------------------------------------------------------------------------
# shortcut: shapes with a class-correlated corner marker
# --------------------------------------------------------------------------------------------------------

_PALETTE = np.array(
    [
        [220, 50, 50],
        [50, 170, 60],
        [50, 90, 220],
        [230, 200, 40],
        [200, 60, 200],
        [40, 190, 200],
        [240, 130, 30],
    ],
    _F32,
)
_MARKER_SIZE = 6
_MARKER_OFFSET = 4
_MARKER_AGREEMENT = 0.95
_OBJECT_MARGIN = 13  # objects stay inside [13, 99): never under a marker


def _marker_origin(corner: int) -> tuple[int, int]:
    """Top-left pixel (y, x) of the marker in corner 0 TL, 1 TR, 2 BL, 3 BR."""
    far = _S - _MARKER_OFFSET - _MARKER_SIZE
    return (_MARKER_OFFSET if corner < 2 else far), (_MARKER_OFFSET if corner % 2 == 0 else far)


def _shape_sdf(label: int, u: np.ndarray, v: np.ndarray, area: float, rng: np.random.Generator) -> np.ndarray:
    """Signed distance of a circle, square, triangle or cross of the given area (frame already rotated)."""
    if label == 0:
        return np.sqrt(u * u + v * v) - math.sqrt(area / math.pi)
    if label == 1:
        return _sdf_box(u, v, math.sqrt(area) / 2, math.sqrt(area) / 2)
    if label == 2:
        return _sdf_ngon(u, v, 3, math.sqrt(4 * area / (3 * math.sqrt(3))))
    t = rng.uniform(0.3, 0.4)  # arm width as a fraction of the span
    span = math.sqrt(area / (2 * t - t * t))
    return np.minimum(_sdf_box(u, v, span / 2, t * span / 2), _sdf_box(u, v, t * span / 2, span / 2))


def _shape_extent(label: int, area: float) -> float:
    """Radius of a disc that contains the shape of this area under any rotation."""
    factor = {0: 1 / math.sqrt(math.pi), 1: math.sqrt(0.5), 2: math.sqrt(4 / (3 * math.sqrt(3))), 3: 0.82}
    return factor[label] * math.sqrt(area) + 1.0


def _textured_background(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(85, 170) + rng.uniform(-18, 18, 3)
    img = np.empty((_S, _S, 3), _F32)
    img[:] = base.astype(_F32)
    for c in range(3):
        img[..., c] += _smooth_noise(rng, 5, 5) * _F32(16) + _smooth_noise(rng, 24, 24) * _F32(7)
    for _ in range(int(rng.integers(3, 7))):
        a, b = rng.uniform(2.5, 6.5), rng.uniform(2.5, 6.5)
        win = _window(rng.uniform(0, _S), rng.uniform(0, _S), max(a, b) + 1)
        u, v = _rotate(win.dy, win.dx, rng.uniform(0, math.pi))
        cover = _alpha(_sdf_ellipse(u, v, a, b))[..., None]
        colour = _PALETTE[rng.integers(len(_PALETTE))] * _F32(rng.uniform(0.75, 1.0))
        region = img[win.slices]
        region += cover * (colour - region)
    return img


def _draw_marker(img: np.ndarray, corner: int) -> np.ndarray:
    y, x = _marker_origin(corner)
    img[y : y + _MARKER_SIZE, x : x + _MARKER_SIZE] = 15.0
    img[y + 1 : y + _MARKER_SIZE - 1, x + 1 : x + _MARKER_SIZE - 1] = 250.0
    mask = np.zeros((_S, _S), bool)
    mask[y : y + _MARKER_SIZE, x : x + _MARKER_SIZE] = True
    return mask


def _marker_class(rng: np.random.Generator, label: int, n_classes: int, split: str) -> int:
    if split == "test":
        return int(rng.integers(n_classes))
    if rng.random() < _MARKER_AGREEMENT:
        return label
    return int((label + rng.integers(1, n_classes)) % n_classes)


class ShortcutBenchmark(Benchmark):
    name = "shortcut"
    classes = ("circle", "square", "triangle", "cross")
    description = (
        "Shapes with a spurious corner marker that agrees with the class in 95% of train/val samples and "
        "is random in test. Mask: the object; extra_masks['marker']: the marker."
    )
    extra_mask_keys = ("marker",)
    _bench_id = 3

    def _render(self, streams: _Streams, split: str, evidence: bool) -> _Scene:
        label = int(streams(_LABEL).integers(self.n_classes))
        img = _textured_background(streams(_BACKGROUND))
        marker_class = _marker_class(streams(_MARKER), label, self.n_classes, split)
        marker = _draw_marker(img, marker_class)
        ev = streams(_EVIDENCE)
        area = ev.uniform(380, 1000)
        extent = _shape_extent(label, area)
        cy, cx = (ev.uniform(_OBJECT_MARGIN + extent, _S - _OBJECT_MARGIN - extent) for _ in range(2))
        win = _window(cy, cx, extent + 1)
        u, v = _rotate(win.dy, win.dx, ev.uniform(0, 2 * math.pi))
        sdf = _shape_sdf(label, u, v, area, ev)
        cover = _alpha(sdf)
        colour = _PALETTE[ev.integers(len(_PALETTE))] * _F32(ev.uniform(0.8, 1.05))
        shade = (
            1.0 + _F32(ev.uniform(-0.12, 0.12)) * u / _F32(extent) + _F32(ev.uniform(-0.12, 0.12)) * v / _F32(extent)
        )
        outline = np.clip(1.5 - np.abs(sdf + 1.0), 0.0, 1.0) * _F32(0.35)
        obj = colour * (shade * (1.0 - outline))[..., None]
        mask = np.zeros((_S, _S), bool)
        mask[win.slices] = cover > 0
        if evidence:
            region = img[win.slices]
            region += cover[..., None] * (obj - region)
        noise = streams(_NOISE)
        img += noise.standard_normal((_S, _S, 3), dtype=_F32) * _F32(noise.uniform(3.0, 7.0))
        meta = {
            "marker_class": marker_class,
            "marker_consistent": marker_class == label,
            "marker_corner": ("top-left", "top-right", "bottom-left", "bottom-right")[marker_class],
        }
        return _Scene(_to_uint8(img), label, mask, {"marker": marker}, meta)


# --------------------------------------------------------------------------------------------------------
# Registry and batch helpers
# --------------------------------------------------------------------------------------------------------

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (CellsBenchmark(), UltrasoundBenchmark(), ShortcutBenchmark())}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; :class:`DataError` naming the valid ones otherwise."""
    try:
        return BENCHMARKS[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown synthetic benchmark {name!r}; valid: {', '.join(BENCHMARKS)}") from None


def generate(name: str, n: int, seed: int = 0, split: str = "train", start: int = 0) -> list[Sample]:
    """Samples ``start .. start + n - 1`` of ``(name, seed, split)``."""
    bench = get_benchmark(name)
    n, start = _check_int("n", n), _check_int("start", start)
    return [bench.sample(i, seed, split) for i in range(start, start + n)]


def generate_arrays(name: str, n: int, seed: int = 0, split: str = "train", start: int = 0) -> dict[str, np.ndarray]:
    """Stacked samples: 'images' uint8 [n,112,112,3], 'labels' int64 [n], 'masks' bool [n,112,112],
    and 'mask_<key>' bool [n,112,112] for each extra mask of the benchmark."""
    bench = get_benchmark(name)
    n, start = _check_int("n", n), _check_int("start", start)
    out = {
        "images": np.empty((n, _S, _S, 3), np.uint8),
        "labels": np.empty(n, np.int64),
        "masks": np.empty((n, _S, _S), bool),
    }
    for key in bench.extra_mask_keys:
        out[f"mask_{key}"] = np.empty((n, _S, _S), bool)
    for j in range(n):
        s = bench.sample(start + j, seed, split)
        out["images"][j], out["labels"][j], out["masks"][j] = s.image, s.label, s.mask
        for key in bench.extra_mask_keys:
            out[f"mask_{key}"][j] = s.extra_masks[key]
    return out
