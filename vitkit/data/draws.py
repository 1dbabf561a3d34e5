"""Random numbers for a batch of images, either from one generator for the whole batch or from each image's own
seed. The second makes an image's augmentation a function of its seed alone (the sampler's (seed, epoch,
position in the epoch)), whatever batch, rank or world size it lands in: what lets N processes compute the
steps of one.

Per-image uniforms come from a counter-based hash (splitmix64 of the image's seed and the number of values it
drew before), vectorised over the batch; normal noise from a torch generator seeded per image.
"""

from __future__ import annotations

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


class BatchDraws:
    """Draws for a batch of `size` images from one generator (None: torch's global one)."""

    def __init__(self, size: int, generator: torch.Generator | None = None):
        self.size = size
        self.generator = generator

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniforms in [0, 1) of shape (size, *shape)."""
        return torch.rand((self.size, *shape), generator=self.generator)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn((self.size, *shape), generator=self.generator)


class SampleDraws:
    """Draws for a batch whose images each carry a seed: row i depends only on seeds[i] and on the calls made."""

    def __init__(self, seeds):
        self.seeds = np.asarray([int(s) & ((1 << 64) - 1) for s in seeds], dtype=np.uint64)
        self.size = len(self.seeds)
        self.drawn = 0  # values drawn per image so far: the counter of the next one

    def _bits(self, k: int) -> np.ndarray:
        """(size, k) 64-bit hashes of (seed, counter), the counters going on from the last call's."""
        counters = np.arange(self.drawn, self.drawn + k, dtype=np.uint64)
        self.drawn += k
        with np.errstate(over="ignore"):
            return _splitmix(_splitmix(self.seeds[:, None]) ^ (counters[None, :] * _GOLDEN))

    def rand(self, *shape: int) -> torch.Tensor:
        x = self._bits(int(np.prod(shape)) if shape else 1)
        u = (x >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)  # 24 bits: exact floats in [0, 1)
        return torch.from_numpy(u).reshape(self.size, *shape)

    def randn(self, *shape: int) -> torch.Tensor:
        out = torch.empty((self.size, *shape))
        generator = torch.Generator()
        for i, key in enumerate((self._bits(1)[:, 0] >> np.uint64(1)).tolist()):  # one generator seed per image
            generator.manual_seed(int(key))
            out[i] = torch.randn(shape, generator=generator)
        return out


def draws_for(size: int, source) -> BatchDraws | SampleDraws:
    """`source`: draws already, a generator, or None (torch's global generator)."""
    if isinstance(source, (BatchDraws, SampleDraws)):
        return source
    return BatchDraws(size, source)


__all__ = ["BatchDraws", "SampleDraws", "draws_for"]
