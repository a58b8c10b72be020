"""Image preprocessing: smg's processors against transformers' two backends, on the same images.

Per family and image: the median time of smg's processor, of transformers' PIL/NumPy processor
(``Qwen2VLImageProcessor``, ``LlavaImageProcessor``) and, where torchvision imports, of its
torchvision processor (the ``...Fast`` classes), one thread each; then a request of four 1920x1080
photos on one thread and on two (smg runs each image's kernels with the GIL released), each
mode back to back and after the other, on a plain pool and on the gateway's pool with its threads
pinned (``media.pin_threads``), timed in turns with a control (the same threads running compute alone: the machine's own two-thread
ratio at that moment, which a shared VM's neighbours move); last, the Pillow-exact resize alone against Pillow's ``Image.resize``.

    python -m benchmarks.bench_multimodal [--repeat N] [--families phi4_multimodal,llava_next,resize]

torchvision: the test extra installs it; ``TORCHVISION_SITE=DIR`` adds a copy installed aside
(``pip install --no-deps --target DIR torchvision==0.28.*``). See benchmarks/_torchvision.py for
how it imports beside the CPU torch wheel.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
import PIL.Image

from benchmarks._common import median_seconds
from benchmarks._torchvision import import_torchvision
from smg.errors import InvalidImage
from smg.multimodal import kernels_py, warm_up
from smg.multimodal.processor import ImageProcessor
from smg.multimodal.stage import image_threads

SIZES = [(640, 480), (1280, 720), (1920, 1080), (4000, 3000), (1, 1), (33, 1000), (1000, 6), (719, 1283)]
QWEN3 = {"patch_size": 16, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
         "size": {"longest_edge": 16777216, "shortest_edge": 65536}}
LLAVA = {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}
FAMILIES = {"qwen2_vl": ({}, "Qwen2VLImageProcessor", "qwen2_vl"),
            "qwen3_vl": (QWEN3, "Qwen2VLImageProcessor", "qwen2_vl"),
            "llava": (LLAVA, "LlavaImageProcessor", "llava"),
            "llava_next": (LLAVA, "LlavaNextImageProcessor", "llava_next"),
            "pixtral": ({}, "PixtralImageProcessor", "pixtral"),
            "llama4": ({}, "Llama4ImageProcessor", "llama4"),
            "phi4_multimodal": ({}, "Phi4MultimodalImageProcessor", "phi4_multimodal")}
HAS_PIL_BACKEND = {"llama4": False, "phi4_multimodal": False}  # (transformers has torchvision ones only)


def photo(width: int, height: int, seed: int) -> PIL.Image.Image:
    """A photo-like image: smooth gradients with grain (resampling cost does not depend on content)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([127 + 100 * np.sin(x / (17 + c * 5) + y / (23 + c * 3)) for c in range(3)], axis=-1)
    grain = rng.normal(0, 12, base.shape)
    return PIL.Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))


def reference(family: str, fast: bool):
    """transformers' processor of ``family`` (``fast``: its torchvision one), or None when it has none."""
    import importlib

    config, class_name, module = FAMILIES[family]
    if not fast and not HAS_PIL_BACKEND.get(family, True):
        return None
    package = importlib.import_module(f"transformers.models.{module}")
    cls = getattr(package, class_name + ("Fast" if fast else ""))
    processor = cls(**config)
    return lambda images: processor(images, return_tensors="np" if not fast else "pt",
                                    **({} if fast else {"input_data_format": "channels_last"}))


def _columns(reference_ms: float | None, ours_ms: float, width: int = 9, digits: int = 2) -> str:
    """A reference's time and smg's speed-up over it, or dashes where there is no such reference."""
    if reference_ms is None:
        return f"{'-':>{width}} {'-':>7}"
    return f"{reference_ms:{width}.{digits}f} {reference_ms / ours_ms:7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--families", default=",".join([*FAMILIES, "resize"]),
                        help="comma-separated, of " + ", ".join(FAMILIES) + " and resize (the resize kernel alone)")
    args = parser.parse_args()
    chosen = args.families.split(",")
    warm_up()  # as a gateway does at start: kernels loaded, Pillow images in one block
    import transformers

    transformers.logging.set_verbosity_error()  # (its fast processors warn about a 1x1 image's channels)
    try:
        with_tv = import_torchvision(os.environ.get("TORCHVISION_SITE"))
    except Exception:  # installed but not importable here
        with_tv = False
    if with_tv:
        import torch

        torch.set_num_threads(1)
    print(f"one thread per processor; torchvision backend: {'yes' if with_tv else 'no (set TORCHVISION_SITE)'}")
    print(f"{'family':9} {'image':>10} {'smg ms':>9} {'PIL ms':>9} {'x PIL':>7} {'tv ms':>9} {'x tv':>7}")
    for family, (config, _, _) in FAMILIES.items():
        if family not in chosen:
            continue
        ours = ImageProcessor.create(family, config)
        backends = [reference(family, fast=False), reference(family, fast=True) if with_tv else None]
        if backends == [None, None]:
            continue
        totals = [0.0, 0.0, 0.0]
        for seed, (width, height) in enumerate(SIZES):
            image = [photo(width, height, seed)]
            try:
                ours(image)  # (first call: any lazy set-up out of the timing)
            except InvalidImage:  # (Phi-4 refuses 1000x6, as transformers does)
                print(f"{family:9} {f'{width}x{height}':>10} refused by both")
                continue
            times = [median_seconds(lambda: ours(image), args.repeat)]
            for backend in backends:
                if backend is not None:
                    backend(image)
                times.append(median_seconds(lambda: backend(image), args.repeat) if backend else None)
            for i, value in enumerate(times):
                totals[i] += value or 0.0
            print(f"{family:9} {f'{width}x{height}':>10} {times[0] * 1e3:9.2f} "
                  + " ".join(_columns(t * 1e3 if t else None, times[0] * 1e3) for t in times[1:]))
        print(f"{family:9} {'sum':>10} {totals[0] * 1e3:9.1f} "
              + " ".join(_columns(totals[i] * 1e3 if backends[i - 1] else None, totals[0] * 1e3, digits=1)
                         for i in (1, 2)))
        batch = [photo(1920, 1080, 40 + i) for i in range(4)]  # four photos of one request
        spin = _spin_of(median_seconds(lambda: ours(batch[:1]), args.repeat))
        with ThreadPoolExecutor(2) as pool, image_threads(pin=True, count=2) as pinned:
            # Each mode twice in a turn: the first request after the other mode's (two threads
            # then start from a pool idle for a one-thread request's length, their virtual CPUs
            # asleep), the second at once after its like, as under steady load. "pinned": the
            # gateway's pool with media.pin_threads, each thread bound to its own CPU.
            one_after, one, two_after, two, _, pinned_after, pinned_two, spin_one, spin_two = _interleaved(
                [lambda: ours(batch), lambda: ours(batch), lambda: ours(batch, executor=pool),
                 lambda: ours(batch, executor=pool), lambda: ours(batch), lambda: ours(batch, executor=pinned),
                 lambda: ours(batch, executor=pinned), lambda: list(map(_spin, [spin] * 4)),
                 lambda: list(pool.map(_spin, [spin] * 4))], 4 * args.repeat)
        print(f"{family:9} 4 x 1920x1080 request: 1 thread {one * 1e3:.1f} ms, 2 threads {two * 1e3:.1f} ms, "
              f"x{one / two:.2f} back to back, x{one_after / two_after:.2f} after the other mode; pinned "
              f"x{one / pinned_two:.2f}, x{one_after / pinned_after:.2f} (machine: x{spin_one / spin_two:.2f})")
    if "resize" in chosen:
        _resize_rows(args.repeat)


def _interleaved(runs, repeat: int) -> list[float]:
    """Median seconds of each of ``runs``, timed in turns: on a shared 2-core VM the machine's
    speed drifts over seconds, and timing one after the other puts the drift in the ratios."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for fn, samples in zip(runs, times):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


@nb.njit(nogil=True)
def _spin(steps: int) -> float:
    total = 0.0
    for i in range(steps):
        total += math.sqrt(i)
    return total


def _spin_of(seconds: float) -> int:
    """Steps of ``_spin`` that take ``seconds``: the request row's control, four such jobs of
    compute alone (no memory, no GIL) on the same two threads in the same turns. Its ratio is what
    this machine gives two threads at that moment (a busy host's VM gets less, down to x1.0)."""
    _spin(1000)
    start = time.perf_counter()
    _spin(10_000_000)
    return int(10_000_000 * seconds / (time.perf_counter() - start))


RESIZES = [((3000, 4000), (862, 1148)), ((1080, 1920), (336, 597)), ((3000, 4000), (505, 672)),
           ((480, 640), (504, 672)), ((1080, 1920), (1092, 1932))]


def _resize_rows(repeat: int) -> None:
    """The Pillow-exact resize alone (bicubic, RGB): Pillow's ``Image.resize``, which
    transformers' PIL backend calls, against smg's kernels with each tier of compiled passes this
    CPU runs (``smg._ext.resample.TIERS``) and with the Numba passes; the same output bytes (tests)."""
    from smg._ext import resample
    from smg.multimodal import kernels
    from smg.multimodal.processor import as_rgb_array

    passes = [*resample.TIERS, "numba"]
    print(f"\nresize (bicubic, RGB), ms; smg with each tier of passes: {', '.join(passes)}")
    print(f"{'from':>10} {'to':>10} {'Pillow':>8} " + " ".join(f"{name:>11} {'x':>5}" for name in passes))
    simd = kernels._resample
    for seed, ((h, w), (out_h, out_w)) in enumerate(RESIZES):
        image = photo(w, h, seed)
        array = as_rgb_array(image, True)
        pillow = median_seconds(lambda: image.resize((out_w, out_h), PIL.Image.Resampling.BICUBIC), repeat)
        row = f"{f'{w}x{h}':>10} {f'{out_w}x{out_h}':>10} {pillow * 1e3:8.2f} "
        for name in passes:
            # (resize picks its passes by the module's SIMD and VERTICAL_TIERS)
            kernels._resample = _Passes(simd, name)
            try:
                ours = median_seconds(lambda: kernels.resize(array, out_h, out_w, kernels_py.BICUBIC), repeat)
            finally:
                kernels._resample = simd
            row += f"{ours * 1e3:11.2f} {pillow / ours:5.2f} "
        print(row)


class _Passes:
    """smg._ext.resample with ``tier``'s passes as the defaults: its whole resize where it has
    both passes (AVX512-VNNI), else its horizontal pass and the Numba vertical one (AVX2), or the
    Numba passes alone ("numba")."""

    def __init__(self, module, tier: str):
        self.SIMD = tier if tier in module.TIERS else ""
        self.VERTICAL_TIERS = (tier,) if tier in module.VERTICAL_TIERS else ()
        self._module = module

    def horizontal(self, *args):
        return self._module.horizontal(*args, tier=self.SIMD)

    def vertical(self, *args):
        return self._module.vertical(*args, tier=self.VERTICAL_TIERS[0])

    def resize(self, *args):
        return self._module.resize(*args, tier=self.VERTICAL_TIERS[0])

    def coeffs(self, *args):
        return self._module.coeffs(*args)


if __name__ == "__main__":
    main()
