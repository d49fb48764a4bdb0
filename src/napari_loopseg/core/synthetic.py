"""Synthetic fluorescent nuclei with exact ground truth, for sample data, tests and benchmarks.

Ellipses of varied size, shape and brightness, some in touching clusters (shared borders split
where the two ellipses meet), blurred by a point-spread function, on an uneven background, with
photon (Poisson) and read noise. Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _place(rng: np.random.Generator, shape, n, radius, cluster_fraction):
    """Centres, semi-axes and angles; clusters touch, loners keep apart."""
    nuclei: list[tuple[float, float, float, float, float]] = []
    attempts = 0
    while len(nuclei) < n and attempts < 50 * n:
        attempts += 1
        a = rng.uniform(*radius)
        b = a * rng.uniform(0.65, 1.0)
        angle = rng.uniform(0, np.pi)
        if nuclei and rng.random() < cluster_fraction:
            cy, cx, ca, cb, _ = nuclei[rng.integers(len(nuclei))]
            theta = rng.uniform(0, 2 * np.pi)
            dist = 0.85 * (0.5 * (ca + cb) + 0.5 * (a + b))
            y, x = cy + dist * np.sin(theta), cx + dist * np.cos(theta)
            gap = 0.6
        else:
            y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            gap = 1.0
        if not (0 <= y < shape[0] and 0 <= x < shape[1]):
            continue
        if all(np.hypot(y - ny, x - nx) > gap * (a + na) for ny, nx, na, _, _ in nuclei):
            nuclei.append((y, x, a, b, angle))
    return nuclei


def make_nuclei(
    shape: tuple[int, int] = (512, 512),
    n: int | None = None,
    radius: tuple[float, float] = (7.0, 13.0),
    cluster_fraction: float = 0.35,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(image uint16, labels uint16/uint32) of fluorescent nuclei."""
    rng = np.random.default_rng(seed)
    height, width = shape
    if n is None:
        n = max(1, int(0.25 * height * width / (np.pi * np.mean(radius) ** 2)))
    labels = np.zeros(shape, np.uint32)
    best = np.full(shape, np.inf, np.float32)
    signal = np.zeros(shape, np.float32)
    for index, (y, x, a, b, angle) in enumerate(_place(rng, shape, n, radius, cluster_fraction), start=1):
        r = int(np.ceil(a)) + 1
        y0, y1 = max(0, int(y) - r), min(height, int(y) + r + 1)
        x0, x1 = max(0, int(x) - r), min(width, int(x) + r + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - y, xx - x
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        d = (u / a) ** 2 + (v / b) ** 2
        win = np.s_[y0:y1, x0:x1]
        inside = (d < 1) & (d < best[win])
        labels[win][inside] = index
        best[win][inside] = d[inside]
        brightness = rng.uniform(0.45, 1.0)
        texture = 1 + 0.15 * ndi.gaussian_filter(rng.normal(size=d.shape), 1.5)
        signal[win][inside] = (brightness * (1 - 0.35 * d) * texture)[inside]
    signal = ndi.gaussian_filter(signal, 1.2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    background = 0.08 + 0.06 * np.sin(yy / height * np.pi + phase[0]) * np.cos(xx / width * np.pi + phase[1])
    photons = 600.0 * (signal + background)
    image = rng.poisson(photons).astype(np.float32) + rng.normal(100.0, 4.0, shape)
    image = np.clip(image, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    from .instances import relabel_sequential

    return image, relabel_sequential(labels)
