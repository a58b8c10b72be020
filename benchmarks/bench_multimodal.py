"""Image preprocessing: smg's processors against transformers' two backends, on the same images.

Per family and image: the median time of smg's processor, of transformers' PIL/NumPy processor
(``Qwen2VLImageProcessor``, ``LlavaImageProcessor``) and, where torchvision imports, of its
torchvision processor (the ``...Fast`` classes), one thread each; then a request of four 1920x1080
photos on one thread and on two (smg runs each image's kernels with the GIL released).

    python -m benchmarks.bench_multimodal [--repeat N]

torchvision: PyPI's Linux wheels are CUDA builds that fail to import beside the CPU torch wheel
(``operator torchvision::nms does not exist``). Install one aside (``pip install --no-deps
--target DIR torchvision==0.28.*``) and set ``TORCHVISION_SITE=DIR``: the two operator schemas the
wheel's missing library would register are declared first, which is enough for the transforms.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image

from benchmarks._common import median_seconds
from smg.multimodal import warm_up
from smg.multimodal.processor import ImageProcessor

SIZES = [(640, 480), (1280, 720), (1920, 1080), (4000, 3000), (1, 1), (33, 1000), (1000, 6), (719, 1283)]
QWEN3 = {"patch_size": 16, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
         "size": {"longest_edge": 16777216, "shortest_edge": 65536}}
LLAVA = {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}
FAMILIES = {"qwen2_vl": ({}, "Qwen2VLImageProcessor", "qwen2_vl"),
            "qwen3_vl": (QWEN3, "Qwen2VLImageProcessor", "qwen2_vl"),
            "llava": (LLAVA, "LlavaImageProcessor", "llava"),
            "llava_next": (LLAVA, "LlavaNextImageProcessor", "llava_next"),
            "pixtral": ({}, "PixtralImageProcessor", "pixtral")}


def photo(width: int, height: int, seed: int) -> PIL.Image.Image:
    """A photo-like image: smooth gradients with grain (resampling cost does not depend on content)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([127 + 100 * np.sin(x / (17 + c * 5) + y / (23 + c * 3)) for c in range(3)], axis=-1)
    grain = rng.normal(0, 12, base.shape)
    return PIL.Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))


def torchvision_available() -> bool:
    site = os.environ.get("TORCHVISION_SITE")
    if site:
        import torch

        sys.path.insert(0, site)
        for name in ("nms", "qnms"):
            try:
                torch.library.define(f"torchvision::{name}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:
                pass  # already declared
    try:
        import torchvision  # noqa: F401
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:
        return False
    return True


def reference(family: str, fast: bool):
    import importlib

    config, class_name, module = FAMILIES[family]
    package = importlib.import_module(f"transformers.models.{module}")
    cls = getattr(package, class_name + ("Fast" if fast else ""))
    processor = cls(**config)
    return lambda images: processor(images, return_tensors="np" if not fast else "pt",
                                    **({} if fast else {"input_data_format": "channels_last"}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warm_up()  # as a gateway does at start: kernels loaded, Pillow images in one block
    with_tv = torchvision_available()
    if with_tv:
        import torch

        torch.set_num_threads(1)
    print(f"one thread per processor; torchvision backend: {'yes' if with_tv else 'no (set TORCHVISION_SITE)'}")
    print(f"{'family':9} {'image':>10} {'smg ms':>9} {'PIL ms':>9} {'x PIL':>7} {'tv ms':>9} {'x tv':>7}")
    for family, (config, _, _) in FAMILIES.items():
        ours = ImageProcessor.create(family, config)
        pil = reference(family, fast=False)
        tv = reference(family, fast=True) if with_tv else None
        totals = [0.0, 0.0, 0.0]
        for seed, (width, height) in enumerate(SIZES):
            image = [photo(width, height, seed)]
            ours(image)  # (first call: any lazy set-up out of the timing)
            times = [median_seconds(lambda: ours(image), args.repeat), median_seconds(lambda: pil(image), args.repeat)]
            if tv is not None:
                tv(image)
                times.append(median_seconds(lambda: tv(image), args.repeat))
            for i, value in enumerate(times):
                totals[i] += value
            tv_cols = f"{times[2] * 1e3:9.2f} {times[2] / times[0]:7.2f}" if tv is not None else f"{'-':>9} {'-':>7}"
            print(f"{family:9} {f'{width}x{height}':>10} {times[0] * 1e3:9.2f} {times[1] * 1e3:9.2f} "
                  f"{times[1] / times[0]:7.2f} {tv_cols}")
        tv_total = f"{totals[2] * 1e3:9.1f} {totals[2] / totals[0]:7.2f}" if tv is not None else f"{'-':>9} {'-':>7}"
        print(f"{family:9} {'sum':>10} {totals[0] * 1e3:9.1f} {totals[1] * 1e3:9.1f} {totals[1] / totals[0]:7.2f} "
              f"{tv_total}")
        batch = [photo(1920, 1080, 40 + i) for i in range(4)]  # four photos of one request
        with ThreadPoolExecutor(2) as pool:
            one = median_seconds(lambda: ours(batch), args.repeat)
            two = median_seconds(lambda: ours(batch, executor=pool), args.repeat)
        print(f"{family:9} 4 x 1920x1080 request: 1 thread {one * 1e3:.1f} ms, 2 threads {two * 1e3:.1f} ms, "
              f"x{one / two:.2f}")


if __name__ == "__main__":
    main()
