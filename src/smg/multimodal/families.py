"""The implemented processor families (each matches transformers' PIL/NumPy backend)."""
from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, ClassVar

import numpy as np

from smg.errors import InvalidImage, UnsupportedFeature
from smg.multimodal.processor import (CLIP_MEAN, CLIP_STD, EngineLayout, ImageProcessor, ProcessedImage,
                                      as_rgb_array, each_image, join, kernels)
from smg.multimodal.kernels_py import BICUBIC, BILINEAR
from smg.multimodal.memory import batches


def _square(size: Mapping[str, int], what: str) -> int:
    if size["height"] != size["width"]:
        raise ValueError(f"{what} must be square, got {size['height']}x{size['width']}")
    return size["height"]


def _channels(images: Sequence, convert_rgb: bool) -> int:
    """The channel count images will have once converted (one for the whole batch)."""
    channels = {3 if convert_rgb and image.mode != "RGB" else len(image.getbands()) for image in images}
    if len(channels) != 1:
        raise InvalidImage(f"images with different channel counts {sorted(channels)} (do_convert_rgb is off)")
    return channels.pop()


class _RowsProcessor(ImageProcessor):
    """A family whose images' rows (patch rows, tiles) stack along the first axis of
    ``pixel_values``, beside one row an image of ``side_key``; vLLM cuts ``pixel_values`` per image
    by ``patches_per_image``. Subclasses say how many rows an image has and their shape, so a batch
    is allocated once and each image writes its rows in place (see ``_into_one_batch``)."""

    side_key: ClassVar[str]

    @abstractmethod
    def _row_count(self, image) -> int:
        """How many rows the image will have (from its size alone)."""

    @abstractmethod
    def _row_shape(self, images: Sequence) -> tuple[int, ...]:
        """The shape of one row of these images."""

    def process(self, images: Sequence, executor: Executor | None = None
                ) -> tuple[list[ProcessedImage], dict[str, np.ndarray]]:
        if len(images) < 2:
            return super().process(images, executor)
        counts = each_image(self._row_count, images)
        processed, batch = self._into_one_batch(images, executor, counts, self._row_shape(images))
        return processed, {"pixel_values": batch,
                           self.side_key: join([image.arrays[self.side_key] for image in processed])}

    def collate(self, images: Sequence[ProcessedImage]) -> dict[str, np.ndarray]:
        return {key: join([image.arrays[key] for image in images]) for key in ("pixel_values", self.side_key)}

    def layout(self, images: Sequence[ProcessedImage]) -> EngineLayout:
        sizes = np.array([len(image.arrays["pixel_values"]) for image in images], np.int64)
        return EngineLayout({"patches_per_image": sizes}, (self.side_key, "patches_per_image"),
                            {"pixel_values": "patches_per_image"})


class QwenVLProcessor(_RowsProcessor):
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL: resize to a multiple of ``patch * merge`` keeping the pixel
    count within bounds (``smart_resize``), then cut into patch rows grouped by merge blocks.
    ``qwen3_vl`` differs only in its defaults (16-pixel patches, mean and std 0.5, larger bounds)."""

    families = ("qwen2_vl", "qwen3_vl")
    image_token = "<|image_pad|>"
    side_key = "image_grid_thw"
    PER_FAMILY = {
        "qwen2_vl": {"patch_size": 14, "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280,
                     "image_mean": CLIP_MEAN, "image_std": CLIP_STD},
        "qwen3_vl": {"patch_size": 16, "min_pixels": 65536, "max_pixels": 16777216,
                     "image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5)},
    }
    COMMON = {"temporal_patch_size": 2, "merge_size": 2, "resample": BICUBIC, "do_resize": True,
              "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True}

    def __init__(self, family: str, config: Mapping[str, Any]):
        super().__init__(family, config, {**self.COMMON, **self.PER_FAMILY[family]})
        get, defaults = self.setting, self.defaults
        size = config.get("size") or {}
        self.min_pixels = config.get("min_pixels") or size.get("shortest_edge") or defaults["min_pixels"]
        self.max_pixels = config.get("max_pixels") or size.get("longest_edge") or defaults["max_pixels"]
        self.patch, self.merge, self.temporal = get("patch_size"), get("merge_size"), get("temporal_patch_size")
        self.resample, self.do_resize, self.convert_rgb = get("resample"), get("do_resize"), get("do_convert_rgb")
        self.table = self.lut()
        self._kernels = kernels()

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """transformers' ``smart_resize``: each side a multiple of patch * merge, pixels in bounds."""
        factor = self.patch * self.merge
        if max(height, width) / min(height, width) > 200:
            raise InvalidImage(f"image aspect ratio {max(height, width) / min(height, width):.1f} is over 200, "
                               f"which the {self.family} processor refuses")
        h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
        return h_bar, w_bar

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) the image is processed at."""
        if self.do_resize:
            return self.target_size(height, width)
        if height % self.patch or width % self.patch:
            raise InvalidImage(f"image of {width}x{height} is not a multiple of the {self.patch}-pixel patch")
        return height, width

    def _row_count(self, image) -> int:
        height, width = self.output_size(*image.size)
        return (height // self.patch) * (width // self.patch)

    def process_one(self, image, out: np.ndarray | None = None) -> ProcessedImage:
        """One image's patch rows, written into ``out`` (its rows of a batch) when given."""
        array = as_rgb_array(image, self.convert_rgb)
        height, width = self.output_size(array.shape[1], array.shape[0])
        if (height, width) != array.shape[:2]:
            array = self._kernels.resize(array, height, width, self.resample)
        if out is None:  # (kept memory, its pages faulted already: see smg.multimodal.memory)
            out = batches.empty((height // self.patch) * (width // self.patch),
                                array.shape[2] * self.temporal * self.patch ** 2)
        rows = self._kernels.flatten_patches(array, self.table, self.patch, self.merge, self.temporal, out)
        grid = np.array([[1, height // self.patch, width // self.patch]], np.int64)
        return ProcessedImage({"pixel_values": rows, "image_grid_thw": grid}, len(rows) // self.merge ** 2)

    def _row_shape(self, images: Sequence) -> tuple[int, ...]:
        return (_channels(images, self.convert_rgb) * self.temporal * self.patch ** 2,)


class LlavaProcessor(ImageProcessor):
    """LLaVA-1.5 (CLIP preprocessing): optional pad to square with the mean colour, resize the
    shortest edge, centre crop (zero padding a smaller image), normalise to (3, H, W)."""

    families = ("llava",)
    image_token = "<image>"
    DEFAULTS = {"do_pad": False, "do_resize": True, "size": {"shortest_edge": 224}, "resample": BICUBIC,
                "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                "do_convert_rgb": True,
                # the model processor's (processor_config.json), as llava-hf ships them: the vision
                # tower's patch, its CLS token, and "default" dropping that token from the features
                "patch_size": 14, "num_additional_image_tokens": 1, "vision_feature_select_strategy": "default"}

    def __init__(self, family: str, config: Mapping[str, Any]):
        super().__init__(family, config)
        get = self.setting
        self.do_pad, self.do_resize, self.do_crop = get("do_pad"), get("do_resize"), get("do_center_crop")
        self.size, self.resample, self.convert_rgb = self._size(get("size")), get("resample"), get("do_convert_rgb")
        crop = get("crop_size")
        self.crop = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
        self.background = tuple(int(x * 255) for x in get("image_mean"))
        self.patch = get("patch_size")
        self.extra_tokens = get("num_additional_image_tokens") - (get("vision_feature_select_strategy") == "default")
        self.table = self.lut()
        self._kernels = kernels()

    @staticmethod
    def _size(size) -> int | tuple[int, int]:
        if isinstance(size, int):
            return size
        if "shortest_edge" in size:
            return size["shortest_edge"]
        return size["height"], size["width"]

    def _resized(self, height: int, width: int) -> tuple[int, int]:
        if isinstance(self.size, tuple):
            return self.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def _pad_to_square(self, array: np.ndarray) -> np.ndarray:
        height, width, channels = array.shape
        if height == width:
            return array
        side = max(height, width)
        square = np.empty((side, side, channels), np.uint8)
        square[:] = np.asarray(self.background[:channels], np.uint8)
        top, left = ((side - height) // 2, 0) if width > height else (0, (side - width) // 2)
        square[top:top + height, left:left + width] = array
        return square

    def _crop_window(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        """The centre crop of an image of that size, when the crop lies inside it."""
        crop_h, crop_w = self.crop
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return (top, left, crop_h, crop_w) if top >= 0 and left >= 0 else None

    def _center_crop(self, array: np.ndarray) -> np.ndarray:
        height, width, channels = array.shape
        crop_h, crop_w = self.crop
        window = self._crop_window(height, width)
        if window is not None:  # (a view: the normaliser reads any layout)
            top, left = window[:2]
            return array[top:top + crop_h, left:left + crop_w]
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        # Smaller than the crop: transformers pads with zeros around the image, then crops.
        padded_h, padded_w = max(crop_h, height), max(crop_w, width)
        pad_top, pad_left = math.ceil((padded_h - height) / 2), math.ceil((padded_w - width) / 2)
        padded = np.zeros((padded_h, padded_w, channels), np.uint8)
        padded[pad_top:pad_top + height, pad_left:pad_left + width] = array
        top, left = top + pad_top, left + pad_left
        return np.ascontiguousarray(padded[max(0, top):min(padded_h, top + crop_h),
                                           max(0, left):min(padded_w, left + crop_w)])

    def _tile(self, array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """CLIP's steps for one tile: resize the shortest edge, centre crop, normalise to (C, H, W)
        (into ``out`` when given: it has the crop's size). A crop inside the resized image is all
        the resize computes (each pixel as in the whole)."""
        if self.do_resize:
            height, width = self._resized(*array.shape[:2])
            window = self._crop_window(height, width) if self.do_crop else None
            array = self._kernels.resize(array, height, width, self.resample, window=window)
        if self.do_crop and array.shape[:2] != self.crop:
            array = self._center_crop(array)
        if out is not None:
            return self._kernels.normalize_into(array, self.table, 0, out)
        return self._kernels.normalize_chw(array, self.table, *array.shape[:2], 0)

    def process_one(self, image, out: np.ndarray | None = None) -> ProcessedImage:
        """One image's (1, C, H, W) pixels, written into ``out`` (its slot of a batch) when given."""
        array = as_rgb_array(image, self.convert_rgb)
        if self.do_pad:
            array = self._pad_to_square(array)
        pixels = self._tile(array, None if out is None else out[0])[None]
        tokens = (pixels.shape[2] // self.patch) * (pixels.shape[3] // self.patch) + self.extra_tokens
        return ProcessedImage({"pixel_values": pixels}, tokens)

    def process(self, images: Sequence, executor: Executor | None = None
                ) -> tuple[list[ProcessedImage], dict[str, np.ndarray]]:
        """With the centre crop on, every image has the crop's shape: each writes its slot of one
        batch (``_into_one_batch``), not joined on one thread afterwards."""
        if len(images) < 2 or not self.do_crop:
            return super().process(images, executor)
        processed, batch = self._into_one_batch(images, executor, [1] * len(images),
                                                (_channels(images, self.convert_rgb), *self.crop))
        return processed, {"pixel_values": batch}

    def collate(self, images: Sequence[ProcessedImage]) -> dict[str, np.ndarray]:
        shapes = {image.arrays["pixel_values"].shape for image in images}
        if len(shapes) > 1:
            raise InvalidImage(f"the {self.family} processor gave images of different shapes {sorted(shapes)}")
        return {"pixel_values": join([image.arrays["pixel_values"] for image in images])}


def select_best_resolution(height: int, width: int, resolutions) -> tuple[int, int]:
    """The candidate resolution keeping the most of the image's pixels, then wasting the fewest
    (transformers' ``select_best_resolution``)."""
    best, most, least_waste = None, 0, float("inf")
    for target_h, target_w in resolutions:
        scale = min(target_w / width, target_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = target_w * target_h - effective
        if effective > most or (effective == most and waste < least_waste):
            best, most, least_waste = (target_h, target_w), effective, waste
    return best


def fit_within(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """The size keeping the aspect ratio that fills ``target`` along its tighter side."""
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


class LlavaNextProcessor(LlavaProcessor):
    """LLaVA-NeXT ("anyres"): the image resized into the best of ``image_grid_pinpoints``, centred on
    a zero canvas of that size and cut into crop-sized tiles, after a global view of the whole image
    resized to a square; each tile then goes through CLIP's steps. A batch's images are padded with
    all-zero tiles to the same tile count."""

    families = ("llava_next",)
    DEFAULTS = {**LlavaProcessor.DEFAULTS, "do_pad": True,
                "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]}

    def __init__(self, family: str, config: Mapping[str, Any]):
        super().__init__(family, {**config, "do_pad": False})  # (do_pad means the batch padding here)
        self.pad_batch = config.get("do_pad", True) is not False
        self.pinpoints = [tuple(p) for p in (config.get("image_grid_pinpoints") or self.DEFAULTS["image_grid_pinpoints"])]
        self.global_side = self.size if isinstance(self.size, int) else min(self.size)
        side = self.crop[0]
        # CLIP's steps leave a crop-sized tile as it is (the usual configs): no resize, no crop
        self._tiles_as_cut = self.crop == (side, side) and (
            not self.do_resize or self._resized(side, side) == (side, side))
        # every canvas cut into whole tiles as they are: process can size the batch from the images' sizes
        self._batch_in_place = self._tiles_as_cut and all(best % side == 0 for pinpoint in self.pinpoints
                                                          for best in pinpoint)

    def _tile_count(self, image) -> int:
        """1 (the global view) + the tiles of the image's best resolution, from its size alone."""
        width, height = image.size
        best_h, best_w = select_best_resolution(height, width, self.pinpoints)
        return 1 + (best_h // self.crop[0]) * (best_w // self.crop[0])

    def process_one(self, image, out: np.ndarray | None = None) -> ProcessedImage:
        """One image's tiles (the global view first), written into ``out`` when given."""
        array = as_rgb_array(image, self.convert_rgb)
        height, width = array.shape[:2]
        best_h, best_w = select_best_resolution(height, width, self.pinpoints)
        fit_h, fit_w = fit_within(height, width, best_h, best_w)
        top, left = (best_h - fit_h) // 2, (best_w - fit_w) // 2
        fitted = self._kernels.resize(array, fit_h, fit_w, self.resample)
        side = self.crop[0]
        rows, cols = best_h // side, best_w // side
        glance = self._kernels.resize(array, self.global_side, self.global_side, self.resample)
        if self._tiles_as_cut and rows * side == best_h and cols * side == best_w and glance.shape[:2] == (side, side):
            # the tiles of the canvas, and the global view, normalised straight into the batch's
            # memory: no canvas is built
            pixels = np.empty((1 + rows * cols, array.shape[2], side, side), np.float32) if out is None else out
            self._kernels.normalize_tiles(glance, self.table, side, 1, 1, 0, 0, 0, pixels[:1])
            self._kernels.normalize_tiles(fitted, self.table, side, rows, cols, top, left, 0, pixels[1:])
        else:
            canvas = np.zeros((best_h, best_w, array.shape[2]), np.uint8)
            canvas[top:top + fit_h, left:left + fit_w] = fitted
            pixels = np.stack([self._tile(glance)] + [self._tile(canvas[y:y + side, x:x + side])
                                                      for y in range(0, best_h, side) for x in range(0, best_w, side)])
            if out is not None:  # (process gives an out only where the fast path applies: kept right anyway)
                out[...] = pixels
                pixels = out
        tokens = self.num_tokens(height, width, best_h, best_w, pixels.shape[2], pixels.shape[3])
        return ProcessedImage({"pixel_values": pixels, "image_sizes": np.array([[height, width]], np.int64)}, tokens)

    def num_tokens(self, height: int, width: int, best_h: int, best_w: int, tile_h: int, tile_w: int) -> int:
        """The global view's features, plus the tiles' features with the padding rows or columns
        cut away and one newline feature per row (transformers' LlavaNextProcessor)."""
        patches_h, patches_w = tile_h // self.patch, tile_w // self.patch
        grid_h, grid_w = patches_h * (best_h // tile_h), patches_w * (best_w // tile_w)
        if width / height > grid_w / grid_h:
            grid_h -= (grid_h - int(round(height * (grid_w / width), 7))) // 2 * 2
        else:
            grid_w -= (grid_w - int(round(width * (grid_h / height), 7))) // 2 * 2
        return grid_h * grid_w + grid_h + patches_h * patches_w + self.extra_tokens

    def process(self, images: Sequence, executor: Executor | None = None
                ) -> tuple[list[ProcessedImage], dict[str, np.ndarray]]:
        """With the tiles as cut, every image writes its tiles into one batch, padded with zero
        tiles to the most (``_into_padded_batch``)."""
        if len(images) < 2 or not self._batch_in_place:
            # (ImageProcessor's: LLaVA's in-place batch has one crop-sized tile an image)
            return ImageProcessor.process(self, images, executor)
        counts = each_image(self._tile_count, images)
        if not self.pad_batch and len(set(counts)) > 1:
            raise InvalidImage("images with different tile counts need do_pad")
        channels, side = _channels(images, self.convert_rgb), self.crop[0]
        processed, batch = self._into_padded_batch(images, executor, [(n, channels, side, side) for n in counts])
        return processed, {"pixel_values": batch,
                           "image_sizes": join([image.arrays["image_sizes"] for image in processed])}

    def collate(self, images: Sequence[ProcessedImage]) -> dict[str, np.ndarray]:
        tiles = [image.arrays["pixel_values"] for image in images]
        if self.pad_batch:
            most = max(len(t) for t in tiles)
            tiles = [np.concatenate([t, np.zeros((most - len(t), *t.shape[1:]), t.dtype)]) if len(t) < most else t
                     for t in tiles]
        elif len({len(t) for t in tiles}) > 1:
            raise InvalidImage("images with different tile counts need do_pad")
        return {"pixel_values": join(tiles, stack=True),
                "image_sizes": join([image.arrays["image_sizes"] for image in images])}

    def layout(self, images: Sequence[ProcessedImage]) -> EngineLayout:
        return EngineLayout({}, ("pixel_values", "image_sizes"), {})


class PixtralProcessor(ImageProcessor):
    """Pixtral / Mistral Small 3.x: transparent pixels over white, shrink to fit ``longest_edge``
    then round each side up to whole patches, normalise; a batch is zero-padded to its largest
    image. An image's placeholder is a row of ``[IMG]`` per patch row, each row closed by
    ``[IMG_BREAK]`` and the last by ``[IMG_END]``."""

    families = ("pixtral",)
    image_token = "[IMG]"
    structure_tokens = ("[IMG_BREAK]", "[IMG_END]")
    DEFAULTS = {"do_resize": True, "size": {"longest_edge": 1024}, "patch_size": {"height": 16, "width": 16},
                "resample": BICUBIC, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "do_convert_rgb": True,
                "spatial_merge_size": 1}  # (the model processor's: patches merged per token side)

    def __init__(self, family: str, config: Mapping[str, Any]):
        super().__init__(family, config)
        get = self.setting
        size, patch = get("size"), get("patch_size")
        self.max_size = (size["longest_edge"],) * 2 if "longest_edge" in size else (size["height"], size["width"])
        patch = (patch, patch) if isinstance(patch, int) else (patch["height"], patch["width"])
        merge = get("spatial_merge_size")
        self.patch = (patch[0] * merge, patch[1] * merge)
        self.do_resize, self.resample, self.convert_rgb = get("do_resize"), get("resample"), get("do_convert_rgb")
        self.table = self.lut()
        self._kernels = kernels()

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        ratio = max(height / self.max_size[0], width / self.max_size[1])
        if ratio > 1:
            height, width = int(math.floor(height / ratio)), int(math.floor(width / ratio))
        patch_h, patch_w = self.patch
        return ((height - 1) // patch_h + 1) * patch_h, ((width - 1) // patch_w + 1) * patch_w

    def _size(self, image) -> tuple[int, int]:
        """(height, width) of the image's pixel values."""
        width, height = image.size
        return self.target_size(height, width) if self.do_resize else (height, width)

    def process_one(self, image, out: np.ndarray | None = None) -> ProcessedImage:
        """One image's pixel values, written into ``out`` (C, height, width) when given."""
        array = as_rgb_array(image, self.convert_rgb, on_white=True)
        if self.do_resize:
            array = self._kernels.resize(array, *self._size(image), self.resample)
        if out is None:
            pixels = self._kernels.normalize_chw(array, self.table, *array.shape[:2], 0)
        else:
            pixels = self._kernels.normalize_into(array, self.table, 0, out)
        rows, cols = pixels.shape[1] // self.patch[0], pixels.shape[2] // self.patch[1]
        return ProcessedImage({"pixel_values": pixels, "image_sizes": np.array([pixels.shape[1:]], np.int64)},
                              rows * (cols + 1))

    def process(self, images: Sequence, executor: Executor | None = None
                ) -> tuple[list[ProcessedImage], dict[str, np.ndarray]]:
        """Every image writes its pixels into one batch, zero-padded to the largest (``_into_padded_batch``)."""
        if len(images) < 2:
            return super().process(images, executor)
        channels = _channels(images, self.convert_rgb)
        processed, batch = self._into_padded_batch(images, executor,
                                                   [(channels, *size) for size in each_image(self._size, images)])
        return processed, {"pixel_values": batch,
                           "image_sizes": join([image.arrays["image_sizes"] for image in processed])}

    def placeholder_ids(self, image: ProcessedImage, token_ids: Mapping[str, int]) -> list[int]:
        height, width = image.arrays["image_sizes"][0]
        cols = int(width) // self.patch[1]
        row = [token_ids[self.image_token]] * cols + [token_ids["[IMG_BREAK]"]]
        ids = row * (int(height) // self.patch[0])
        ids[-1] = token_ids["[IMG_END]"]
        return ids

    def collate(self, images: Sequence[ProcessedImage]) -> dict[str, np.ndarray]:
        sizes = join([image.arrays["image_sizes"] for image in images])
        if len(images) == 1:
            return {"pixel_values": images[0].arrays["pixel_values"][None], "image_sizes": sizes}
        height, width = sizes.max(axis=0)
        pixels = np.zeros((len(images), 3, height, width), np.float32)
        for i, image in enumerate(images):
            _, h, w = image.arrays["pixel_values"].shape
            pixels[i, :, :h, :w] = image.arrays["pixel_values"]
        return {"pixel_values": pixels, "image_sizes": sizes}

    def layout(self, images: Sequence[ProcessedImage]) -> EngineLayout:
        return EngineLayout({}, ("pixel_values", "image_sizes"), {})


def llama4_canvases(max_tiles: int, tile: int) -> list[tuple[int, int]]:
    """Every tile grid of at most ``max_tiles`` tiles, as (height, width) pixels, in the order
    transformers' ``find_supported_resolutions`` lists them (grouped by aspect ratio, first seen
    from the most tiles down), which decides ties."""
    by_ratio: dict[float, list[tuple[int, int]]] = {}
    for count in range(max_tiles, 0, -1):
        factors = sorted({f for i in range(1, int(count ** 0.5) + 1) if count % i == 0 for f in (i, count // i)})
        for rows in factors:
            by_ratio.setdefault(rows / (count // rows), []).append((rows, count // rows))
    return [(rows * tile, cols * tile) for grids in by_ratio.values() for rows, cols in grids]


class Llama4Processor(_RowsProcessor):
    """Llama 4: the canvas of at most ``max_patches`` 336-pixel tiles that needs the least upscaling
    (or, when every one shrinks the image, the least shrinking), the image resized into it without
    distortion and zero-padded at the right and bottom, cut into tiles, plus a global tile of the
    whole image when there are several; rescaled and normalised in bfloat16. Equal to transformers'
    torchvision processor (the only one it has): torchvision's uint8 antialiased resize has int16
    weights, which ``resize(..., torch_weights=True)`` reproduces. ``pixel_values`` holds the
    bfloat16 values as float32."""

    families = ("llama4",)
    image_token = "<|image|>"
    side_key = "aspect_ratios"
    feature_token = "<|patch|>"
    structure_tokens = ("<|image_start|>", "<|image_end|>", "<|patch|>", "<|tile_x_separator|>",
                        "<|tile_y_separator|>")
    DEFAULTS = {"size": {"height": 336, "width": 336}, "max_patches": 16, "resize_to_max_canvas": False,
                "resample": BILINEAR, "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255,
                "do_normalize": True, "image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5),
                "do_convert_rgb": True,
                # the model processor's (processor_config.json): vision patch and pixel shuffle
                "patch_size": 14, "pixel_shuffle_ratio": 0.5}

    def __init__(self, family: str, config: Mapping[str, Any]):
        super().__init__(family, config)
        get = self.setting
        self.tile = _square(get("size"), "Llama 4 tiles")
        self.canvases = llama4_canvases(get("max_patches"), self.tile)
        if get("resize_to_max_canvas"):  # (transformers 5.3 fails on it too: its target size is unset)
            raise UnsupportedFeature("Llama 4's resize_to_max_canvas is not supported")
        self.resample = get("resample")
        self.convert_rgb = get("do_convert_rgb")
        shuffle = int(round(1.0 / get("pixel_shuffle_ratio") ** 2))
        self.tokens_per_tile = (self.tile // get("patch_size")) ** 2 // shuffle
        self.table = self.lut(bfloat16=True)
        self._kernels = kernels()

    def canvas(self, height: int, width: int) -> tuple[int, int]:
        """transformers' ``get_best_fit``: the least upscaling, else the least shrinking (its scales
        are float32, which decides ties)."""
        targets = np.array(self.canvases, np.float32)
        scales = np.minimum(targets[:, 0] / np.float32(height), targets[:, 1] / np.float32(width))
        upscaling = scales[scales >= 1]
        if len(upscaling):
            chosen = upscaling.min()
        else:
            chosen = scales[scales < 1].max()
        candidates = [self.canvases[i] for i in np.flatnonzero(scales == chosen)]
        return min(candidates, key=lambda c: c[0] * c[1])  # the first of the smallest area

    def fit_size(self, height: int, width: int, canvas_h: int, canvas_w: int) -> tuple[int, int]:
        """The size the image is resized to inside its canvas, without distortion (and without
        upscaling past one tile). transformers mixes Python ints with 0-d int64 tensors here: a
        canvas side under the image's (or a tile's) stays a tensor, and its scale is then float32
        arithmetic (1280x720 into 672x672 is 377 rows, not 378), which this follows."""
        sides = []
        for side, canvas in ((height, canvas_h), (width, canvas_w)):
            limit = max(side, self.tile)
            sides.append((canvas, np.float32(canvas) / np.float32(side)) if canvas < limit else (limit, limit / side))
        (target_h, scale_h), (target_w, scale_w) = sides
        if scale_w < scale_h:  # (float32 when either is)
            return max(min(math.floor(height * scale_w), target_h), 1), max(target_w, 1)
        return max(target_h, 1), max(min(math.floor(width * scale_h), target_w), 1)

    def _tile_count(self, height: int, width: int) -> tuple[int, int, int]:
        """(rows, columns, tiles): a global view is added when there are several."""
        canvas_h, canvas_w = self.canvas(height, width)
        rows, cols = canvas_h // self.tile, canvas_w // self.tile
        return rows, cols, rows * cols + (rows * cols > 1)

    def process_one(self, image, out: np.ndarray | None = None) -> ProcessedImage:
        """One image's tiles, written into ``out`` (its tiles of a batch) when given."""
        array = as_rgb_array(image, self.convert_rgb)
        height, width = array.shape[:2]
        rows, cols, count = self._tile_count(height, width)
        fit_h, fit_w = self.fit_size(height, width, rows * self.tile, cols * self.tile)
        fitted = self._kernels.resize(array, fit_h, fit_w, self.resample, True)
        tiles = out
        if tiles is None:
            tiles = batches.empty(count, array.shape[2], self.tile, self.tile)
        self._kernels.normalize_tiles(fitted, self.table, self.tile, rows, cols, 0, 0, 0, tiles[:rows * cols])
        if count > rows * cols:
            overview = self._kernels.resize(array, self.tile, self.tile, self.resample, True)
            self._kernels.normalize_tiles(overview, self.table, self.tile, 1, 1, 0, 0, 0, tiles[-1:])
        return ProcessedImage({"pixel_values": tiles, "aspect_ratios": np.array([[rows, cols]], np.int64)},
                              count * self.tokens_per_tile)

    def placeholder_ids(self, image: ProcessedImage, token_ids: Mapping[str, int]) -> list[int]:
        """``<|image_start|>``, each tile's patches (tiles of a row apart by ``<|tile_x_separator|>``,
        rows closed by ``<|tile_y_separator|>``) when there are several, then ``<|image|>``, the
        global view's patches and ``<|image_end|>`` (transformers' Llama4Processor)."""
        rows, cols = (int(v) for v in image.arrays["aspect_ratios"][0])
        patches = [token_ids["<|patch|>"]] * self.tokens_per_tile
        ids = [token_ids["<|image_start|>"]]
        if rows * cols > 1:
            for _ in range(rows):
                for col in range(cols):
                    ids += patches
                    if col < cols - 1:
                        ids.append(token_ids["<|tile_x_separator|>"])
                ids.append(token_ids["<|tile_y_separator|>"])
        return ids + [token_ids["<|image|>"], *patches, token_ids["<|image_end|>"]]

    def _row_count(self, image) -> int:
        return self._tile_count(image.size[1], image.size[0])[2]

    def _row_shape(self, images: Sequence) -> tuple[int, ...]:
        return _channels(images, self.convert_rgb), self.tile, self.tile


class Phi4MultimodalProcessor(ImageProcessor):
    """Phi-4-multimodal ("dynamic HD"): the image resized into a grid of 448-pixel crops (its own
    crop counts, or the closest aspect ratio of at most ``dynamic_hd`` crops), white-padded at the
    right and bottom, normalised; the crops, after a global view that resizes the normalised
    canvas to one crop (bicubic, no antialiasing); per crop a 32x32 attention mask that zeroes the
    padding's patches. Equal to transformers' torchvision processor (it has no other): its uint8
    resize is ``resize(..., torch_weights=True)``, the global view ``bicubic_canvas``."""

    families = ("phi4_multimodal",)
    image_token = "<|image|>"
    pixel_key = "image_pixel_values"
    DEFAULTS = {"size": {"height": 448, "width": 448}, "patch_size": 14, "dynamic_hd": 36, "resample": BICUBIC,
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": (0.5, 0.5, 0.5),
                "image_std": (0.5, 0.5, 0.5), "do_convert_rgb": True}

    def __init__(self, family: str, config: Mapping[str, Any]):
        super().__init__(family, config)
        get = self.setting
        self.crop, self.patch, self.max_crops = _square(get("size"), "Phi-4 crops"), get("patch_size"), get("dynamic_hd")
        self.mask_size = self.crop // self.patch
        self.convert_rgb = get("do_convert_rgb")
        if get("resample") != BICUBIC:
            raise UnsupportedFeature("Phi-4-multimodal's global view is resized bicubic only")
        self.table = self.lut(fused=True)
        self._kernels = kernels()

    def crop_grid(self, height: int, width: int) -> tuple[int, int]:
        """(columns, rows) of crops (transformers' dynamic_preprocess)."""
        cols, rows = math.ceil(width / float(self.crop)), math.ceil(height / float(self.crop))
        if cols * rows <= self.max_crops:
            return cols, rows
        grids = sorted({(i, j) for n in range(1, self.max_crops + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                        if i * j <= self.max_crops}, key=lambda grid: grid[0] * grid[1])
        aspect, best, best_diff = width / height, (1, 1), float("inf")
        for grid in grids:  # the closest aspect ratio; on a tie the later grid when the image is large enough
            diff = abs(aspect - grid[0] / grid[1])
            if diff < best_diff:
                best, best_diff = grid, diff
            elif diff == best_diff and width * height > 0.5 * self.crop * self.crop * grid[0] * grid[1]:
                best = grid
        return best

    def _crop_count(self, image) -> int:
        cols, rows = self.crop_grid(image.size[1], image.size[0])
        return 1 + rows * cols  # the global view first

    def process_one(self, image, out: np.ndarray | None = None) -> ProcessedImage:
        """One image's crops (the global view first), written into ``out`` when given."""
        array = as_rgb_array(image, self.convert_rgb)
        height, width = array.shape[:2]
        cols, rows = self.crop_grid(height, width)
        target_w, target_h = self.crop * cols, self.crop * rows
        if target_w / width < target_h / height:
            new_w, new_h = target_w, int(height * (target_w / width))
        else:
            new_w, new_h = int(width * (target_h / height)), target_h
        if min(new_h, target_h) < 10 or min(new_w, target_w) < 10:
            raise InvalidImage(f"image of {width}x{height} has too extreme an aspect ratio for the "
                               f"{self.family} processor (it would be {new_w}x{new_h})")
        resized = self._kernels.resize(array, new_h, new_w, BILINEAR, True)
        if out is None:
            out = batches.empty(1 + rows * cols, array.shape[2], self.crop, self.crop)
        # the crops of the white-padded canvas straight from the resized image; the global view
        # from the normalised canvas
        self._kernels.normalize_tiles(resized, self.table, self.crop, rows, cols, 0, 0, 255, out[1:])
        out[0] = self._kernels.bicubic_canvas(resized, self.table, target_h, target_w, 255, self.crop, self.crop)
        masks, tokens = self._masks(rows, cols, target_w - new_w, target_h - new_h)
        return ProcessedImage({"image_pixel_values": out, "image_sizes": np.array([[target_h, target_w]], np.int64),
                               "image_attention_mask": masks, "num_img_tokens": np.array([tokens], np.int64)}, tokens)

    def _masks(self, rows: int, cols: int, pad_w: int, pad_h: int) -> tuple[np.ndarray, int]:
        """Per crop (the global view first) the patch mask, the padding's whole patches zero, and
        the image's token count."""
        m = self.mask_size
        mask = np.ones((m * rows, m * cols), np.float32)
        if pad_w >= self.patch:
            mask[:, -(pad_w // self.patch):] = 0
        if pad_h >= self.patch:
            mask[-(pad_h // self.patch):, :] = 0
        crop_masks = mask.reshape(rows, m, cols, m).transpose(0, 2, 1, 3).reshape(-1, m, m)
        merged = crop_masks[:, 0::2, 0::2].reshape(rows, cols, -(-m // 2), -(-m // 2)).transpose(0, 2, 1, 3)
        merged = merged.reshape(rows * -(-m // 2), cols * -(-m // 2))
        # (the global view's 256 tokens, a separator, the crops' merged patches with one newline a row, 16)
        tokens = 256 + 1 + int(merged.sum()) + int(merged[:, 0].sum()) + 16
        return np.concatenate([np.ones((1, m, m), np.float32), crop_masks]), tokens

    def process(self, images: Sequence, executor: Executor | None = None
                ) -> tuple[list[ProcessedImage], dict[str, np.ndarray]]:
        """Every image writes its crops into one batch, padded with zero crops to the most (``_into_padded_batch``)."""
        if len(images) < 2:
            return super().process(images, executor)
        channels, side = _channels(images, self.convert_rgb), self.crop
        processed, batch = self._into_padded_batch(
            images, executor, [(count, channels, side, side) for count in each_image(self._crop_count, images)])
        return processed, {**self.collate(processed, pixels=False), "image_pixel_values": batch}

    def collate(self, images: Sequence[ProcessedImage], pixels: bool = True) -> dict[str, np.ndarray]:
        most = max(len(image.arrays["image_pixel_values"]) for image in images)

        def padded(key: str, fill: float) -> np.ndarray:  # the crop axis, to the batch's most
            parts = [image.arrays[key] for image in images]  # (one with the most as it is: no copy)
            return join([p if len(p) == most else np.concatenate([p, np.full((most - len(p), *p.shape[1:]), fill,
                                                                             p.dtype)]) for p in parts], stack=True)

        joined = {key: join([image.arrays[key] for image in images]) for key in ("image_sizes", "num_img_tokens")}
        joined["image_attention_mask"] = padded("image_attention_mask", 1.0)
        if pixels:
            joined["image_pixel_values"] = padded("image_pixel_values", 0.0)
        return joined

    def layout(self, images: Sequence[ProcessedImage]) -> EngineLayout:
        # (the encoder input travels as the protos' pixel_values, whatever the family calls it)
        return EngineLayout({}, ("pixel_values", "image_sizes", "image_attention_mask", "num_img_tokens"), {})
