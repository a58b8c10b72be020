"""What an engine checks of a request's preprocessed images before it would run its encoder: the
tensors decode to their declared shapes, the placeholder ranges hold the image token and nothing
else does, and each image's tensors agree with its range. The reference engine refuses a request
that fails (INVALID_ARGUMENT), as a real engine would fail it in its encoder."""
from __future__ import annotations

import math

_DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "uint32": 4, "uint8": 1}


def _tensor(name: str, tensor, bytes_field: str):
    """``(shape, None)`` or ``(None, error)`` for one TensorData."""
    shape = list(tensor.shape)
    if tensor.dtype not in _DTYPES:
        return None, f"{name}: unknown dtype {tensor.dtype!r}"
    if not shape:
        return None, f"{name}: no shape"
    payload = getattr(tensor, bytes_field)
    if len(payload) != math.prod(shape) * _DTYPES[tensor.dtype]:
        return None, f"{name}: {len(payload)} bytes for shape {shape} of {tensor.dtype}"
    return shape, None


def _int_rows(tensor, bytes_field: str) -> list[list[int]]:
    import numpy as np

    array = np.frombuffer(getattr(tensor, bytes_field), dtype=np.dtype(tensor.dtype).newbyteorder("<"))
    return array.reshape(list(tensor.shape)).reshape(tensor.shape[0], -1).tolist()


def check_multimodal(input_ids: list[int], mm, bytes_field: str, vllm: bool) -> str | None:
    """None when ``mm`` (a proto MultimodalInputs) is consistent with ``input_ids``; else why not."""
    if not mm.HasField("pixel_values"):
        return "mm_inputs without pixel_values"
    pixels, error = _tensor("pixel_values", mm.pixel_values, bytes_field)
    if error:
        return error
    if not mm.HasField("im_token_id"):
        return "mm_inputs without im_token_id"
    token = mm.im_token_id
    ranges = [(p.offset, p.length) for p in mm.mm_placeholders]
    if not ranges:
        return "mm_inputs without placeholders"
    end = 0
    features = []  # image tokens per placeholder (a placeholder may also hold row-break tokens)
    for offset, length in ranges:
        if length < 1 or offset < end or offset + length > len(input_ids):
            return f"placeholder ({offset}, {length}) is out of order or outside the prompt of {len(input_ids)}"
        features.append(input_ids[offset:offset + length].count(token))
        if not features[-1]:
            return f"placeholder ({offset}, {length}) holds no image token {token}"
        end = offset + length
    if input_ids.count(token) != sum(features):
        return "the prompt holds image tokens outside the placeholders"
    images = len(ranges)
    shapes = {}
    for name, tensor in mm.model_specific_tensors.items():
        shapes[name], error = _tensor(name, tensor, bytes_field)
        if error:
            return error
    if "image_grid_thw" in shapes:  # patch rows: t*h*w per image, merged into tokens by a square factor
        grids = _int_rows(mm.model_specific_tensors["image_grid_thw"], bytes_field)
        if len(grids) != images:
            return f"image_grid_thw has {len(grids)} rows for {images} placeholders"
        if sum(math.prod(grid) for grid in grids) != pixels[0]:
            return f"pixel_values has {pixels[0]} patch rows; image_grid_thw says {sum(math.prod(g) for g in grids)}"
        for grid, length in zip(grids, features):
            merge = math.isqrt(math.prod(grid) // length) if math.prod(grid) % length == 0 else 0
            if merge < 1 or merge * merge * length != math.prod(grid):
                return f"an image of grid {grid} cannot fill a placeholder of {length} image tokens"
    elif "aspect_ratios" in shapes:  # tiles: rows x columns per image, and a global one when several
        grids = _int_rows(mm.model_specific_tensors["aspect_ratios"], bytes_field)
        tiles = [rows * cols + (rows * cols > 1) for rows, cols in grids]
        if len(grids) != images or sum(tiles) != pixels[0]:
            return f"pixel_values holds {pixels[0]} tiles; aspect_ratios says {sum(tiles)} for {len(grids)} images"
        per_tile = {length // count for length, count in zip(features, tiles) if length % count == 0}
        if len(per_tile) != 1 or any(length % count for length, count in zip(features, tiles)):
            return "the placeholders' image tokens are not the same number per tile"
    elif pixels[0] != images:
        return f"pixel_values holds {pixels[0]} images for {images} placeholders"
    if vllm:
        for key in mm.batched_keys:
            shape = pixels if key == "pixel_values" else shapes.get(key)
            if shape is None or shape[0] != images:
                return f"batched key {key!r} does not have one entry per image"
        for key, sizes_key in mm.flat_keys.items():
            if sizes_key not in shapes:
                return f"flat key {key!r} names a missing sizes tensor {sizes_key!r}"
            sizes = _int_rows(mm.model_specific_tensors[sizes_key], bytes_field)
            total = (pixels if key == "pixel_values" else shapes.get(key, [0]))[0]
            if len(sizes) != images or sum(row[0] for row in sizes) != total:
                return f"flat key {key!r}: the sizes in {sizes_key!r} do not add up to its {total} rows"
    return None
