"""Image processors: one class per model family, each equal to its transformers processor.

``ImageProcessor.create(family, config)`` takes the model's ``preprocessor_config.json`` (a dict,
the file, or the model directory holding it); what the file omits takes transformers' defaults for
that family. Calling a processor with PIL images returns transformers' keys as NumPy arrays. Each
image is processed on its own (:meth:`ImageProcessor.process_one`, which runs in compiled kernels
with the GIL released), so several images of one request run on several threads; :meth:`collate`
joins them.
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from smg.errors import InvalidImage
from smg.multimodal.memory import batches
from smg.multimodal.pixels import pixels

#: transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD, the default of most processors.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def kernels():
    """The Numba kernels, or their NumPy twins under ``SMG_NO_EXTENSIONS=1``."""
    from smg._ext import USE_TWINS

    if USE_TWINS:
        from smg.multimodal import kernels_py as module
    else:
        from smg.multimodal import kernels as module
    return module


def load_config(config: Mapping[str, Any] | str | os.PathLike | None) -> dict[str, Any]:
    """A processor config as a dict: given, read from a JSON file, or from a model directory. A
    directory's ``processor_config.json`` fills in what its ``preprocessor_config.json`` leaves out:
    the model processor's settings that decide token counts live there (LLaVA's ``patch_size`` and
    ``num_additional_image_tokens``, Pixtral's ``spatial_merge_size``, Llama 4's
    ``pixel_shuffle_ratio``)."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    path = os.fspath(config)
    if not os.path.isdir(path):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    merged: dict[str, Any] = {}
    for name in ("processor_config.json", "preprocessor_config.json"):  # the second wins
        if os.path.exists(os.path.join(path, name)):
            with open(os.path.join(path, name), encoding="utf-8") as handle:
                merged.update(json.load(handle))
    return merged


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even), as float32."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)


def normalize_table(scale: float | None, mean: Sequence[float] | None, std: Sequence[float] | None,
                    channels: int = 3, bfloat16: bool = False, fused: bool = False) -> np.ndarray:
    """``lut[c, v]``: what rescale then normalise make of the uint8 value ``v`` in channel ``c``, as
    transformers computes them: the PIL backend's float64 product cast to float32, then float32;
    with ``bfloat16`` (Llama 4's torchvision processor) each step rounded to bfloat16; ``fused``
    (the other torchvision processors) one float32 normalise by mean and std scaled by 1/scale."""
    values = np.arange(256, dtype=np.float64)
    if fused and scale is not None and mean is not None:
        inverse = np.float32(1.0 / scale)
        mean32 = np.broadcast_to(np.asarray(mean, np.float32) * inverse, (channels,))[:, None]
        std32 = np.broadcast_to(np.asarray(std, np.float32) * inverse, (channels,))[:, None]
        return np.ascontiguousarray((values.astype(np.float32)[None] - mean32) / std32, dtype=np.float32)
    if bfloat16:
        values = values.astype(np.float32)
        values = to_bfloat16(values * np.float32(scale)) if scale is not None else values
    else:
        values = (values * scale).astype(np.float32) if scale is not None else values.astype(np.float32)
    table = np.repeat(values[None], channels, axis=0)
    if mean is not None:
        mean32 = np.broadcast_to(np.asarray(mean, np.float32), (channels,))[:, None]
        std32 = np.broadcast_to(np.asarray(std, np.float32), (channels,))[:, None]
        if bfloat16:
            table = to_bfloat16(to_bfloat16(table - to_bfloat16(mean32)) / to_bfloat16(std32))
        else:
            table = (table - mean32) / std32
    return np.ascontiguousarray(table, dtype=np.float32)


def as_rgb_array(image, convert_rgb: bool, on_white: bool = False) -> np.ndarray:
    """A PIL image as an (H, W, C) uint8 array (a view of Pillow's memory when it can be), converted
    to RGB as transformers does
    (``on_white``: transparent pixels composited over white first, as Pixtral's processor does)."""
    if convert_rgb and image.mode != "RGB":
        if on_white:
            import PIL.Image

            rgba = image.convert("RGBA")
            canvas = PIL.Image.new("RGBA", rgba.size, "WHITE")
            canvas.paste(rgba, (0, 0), rgba)
            image = canvas
        image = image.convert("RGB")
    array = pixels(image)
    if array.dtype != np.uint8:
        raise InvalidImage(f"image mode {image.mode!r} is not 8-bit; enable do_convert_rgb")
    return array


def _each(run, jobs: Sequence[tuple], executor: Executor | None) -> list:
    """``run(*job)`` for each job (job i is image i's), on ``executor``'s threads when given, in
    order. An image refused says which it was (``InvalidImage.image_index``), so a caller that
    named the images can name it."""
    def call(indexed: tuple[int, tuple]):
        index, job = indexed
        try:
            return run(*job)
        except InvalidImage as exc:
            if exc.image_index is None:
                exc.image_index = index
            raise

    return list(executor.map(call, enumerate(jobs)) if executor else map(call, enumerate(jobs)))


def each_image(run, images: Sequence) -> list:
    """``run(image)`` for each image, on this thread (a batch's sizes, say), refusals indexed as
    ``_each``'s are."""
    return _each(run, [(image,) for image in images], None)


def join(arrays: Sequence[np.ndarray], stack: bool = False) -> np.ndarray:
    """``np.concatenate`` (``np.stack``) of per-image arrays, without the copy for a single image:
    a one-image batch of Qwen patch rows is tens of MB, and its copy cost as much as computing it.
    Arrays that cannot be joined (images of different channel counts, with do_convert_rgb off)
    are the request's fault: InvalidImage."""
    if len(arrays) == 1:
        return arrays[0][None] if stack else arrays[0]
    try:
        return np.stack(arrays) if stack else np.concatenate(arrays)
    except ValueError:
        shapes = sorted({array.shape for array in arrays})
        raise InvalidImage(f"images of different shapes {shapes} cannot share a batch") from None


@dataclass(frozen=True)
class ProcessedImage:
    """One image's arrays (keyed as transformers keys them) and its placeholder token count."""

    arrays: Mapping[str, np.ndarray]
    num_tokens: int


@dataclass(frozen=True)
class EngineLayout:
    """How a batch's tensors split per image, for vLLM's protocol: extra tensors, the keys whose
    first axis is per image, and the keys cut per image by a sizes tensor (key -> sizes key)."""

    extra: Mapping[str, np.ndarray]
    batched_keys: tuple[str, ...]
    flat_keys: Mapping[str, str]


class ImageProcessor(ABC):
    """The preprocessing of one model family. Subclasses register under ``families``."""

    families: ClassVar[tuple[str, ...]] = ()
    #: the placeholder the family's chat template renders once per image (expanded by the stage)
    image_token: ClassVar[str]
    #: other tokens the expansion of a placeholder uses (row breaks, ends)
    structure_tokens: ClassVar[tuple[str, ...]] = ()
    #: the token whose positions take the image's features (the engine's image token id)
    feature_token: ClassVar[str | None] = None  # None: image_token
    #: the key of the encoder input among the outputs (the engine's pixel_values)
    pixel_key: ClassVar[str] = "pixel_values"
    _registry: ClassVar[dict[str, type[ImageProcessor]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for family in cls.families:
            ImageProcessor._registry[family] = cls

    #: transformers' class defaults of the family, for what a config omits
    DEFAULTS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, family: str, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None):
        self.family = family
        self.config = config
        self.defaults = self.DEFAULTS if defaults is None else defaults

    def setting(self, key: str) -> Any:
        """The config's value of ``key``, or the family's default where the config omits it."""
        value = self.config.get(key)
        return self.defaults[key] if value is None else value

    def lut(self, **mode: bool) -> np.ndarray:
        """The rescale + normalise table of this config (``mode``: see :func:`normalize_table`)."""
        get = self.setting
        return normalize_table(get("rescale_factor") if get("do_rescale") else None,
                               get("image_mean") if get("do_normalize") else None, get("image_std"), **mode)

    @staticmethod
    def create(family: str, config: Mapping[str, Any] | str | os.PathLike | None = None) -> ImageProcessor:
        """The processor of ``family`` for this ``preprocessor_config.json`` (dict, file or directory)."""
        from smg.multimodal import families  # noqa: F401  (registers the families)

        cls = ImageProcessor._registry.get(family)
        if cls is None:
            raise ValueError(f"unknown image processor family {family!r}; known: {sorted(ImageProcessor._registry)}")
        return cls(family, load_config(config))

    @abstractmethod
    def process_one(self, image) -> ProcessedImage:
        """Preprocess one PIL image."""

    @abstractmethod
    def collate(self, images: Sequence[ProcessedImage]) -> dict[str, np.ndarray]:
        """Join per-image arrays into the batch transformers returns."""

    def placeholder_ids(self, image: ProcessedImage, token_ids: Mapping[str, int]) -> list[int]:
        """The tokens one image's placeholder expands to (``token_ids``: this family's tokens' ids)."""
        return [token_ids[self.image_token]] * image.num_tokens

    def layout(self, images: Sequence[ProcessedImage]) -> EngineLayout:
        """One ``pixel_values`` entry per image (the first axis)."""
        return EngineLayout({}, ("pixel_values",), {})

    def process(self, images: Sequence, executor: Executor | None = None
                ) -> tuple[list[ProcessedImage], dict[str, np.ndarray]]:
        """Each image processed (on ``executor``'s threads when given) and the batch."""
        processed = _each(self.process_one, [(image,) for image in images], executor)
        return processed, self.collate(processed)

    # Batches of several images are written in place: they are tens of MB, and joining per-image
    # arrays afterwards copied them all on one thread. Their memory is kept from batch to batch
    # (smg.multimodal.memory): fresh memory's page faults were half a large batch's cost.

    def _into_one_batch(self, images: Sequence, executor: Executor | None, counts: Sequence[int],
                        row_shape: tuple[int, ...]) -> tuple[list[ProcessedImage], np.ndarray]:
        """Each image (``process_one(image, out)``) writes its ``counts[i]`` rows of ``row_shape``,
        one after another along the batch's first axis."""
        batch = batches.empty(sum(counts), *row_shape)
        starts = np.cumsum([0, *counts])
        return _each(self.process_one, [(image, batch[starts[i]:starts[i + 1]]) for i, image in enumerate(images)],
                     executor), batch

    def _into_padded_batch(self, images: Sequence, executor: Executor | None, shapes: Sequence[tuple[int, ...]]
                           ) -> tuple[list[ProcessedImage], np.ndarray]:
        """Each image (``process_one(image, out)``) writes its values, of ``shapes[i]``, at the
        start of its own slot of the batch (images, then each axis's largest size); its thread
        zeroes the rest of the slot."""
        inner = tuple(max(sizes) for sizes in zip(*shapes))
        batch = batches.empty(len(images), *inner)

        def run(image, slot: np.ndarray, shape: tuple[int, ...]) -> ProcessedImage:
            for axis, size in enumerate(shape):  # past the image's own values, axis by axis
                slot[tuple(slice(0, s) for s in shape[:axis]) + (slice(size, None),)] = 0.0
            return self.process_one(image, slot[tuple(slice(0, s) for s in shape)])

        return _each(run, list(zip(images, batch, shapes)), executor), batch

    def __call__(self, images: Sequence, executor: Executor | None = None) -> dict[str, np.ndarray]:
        """Preprocess ``images`` (PIL images), on ``executor``'s threads when given."""
        return self.process(images, executor)[1]

