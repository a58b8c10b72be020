"""A decoded PIL image's pixels as a NumPy array without a copy.

``np.asarray(image)`` copies through Pillow's raw encoder, ~4.5 ns a pixel with the GIL held:
55 ms for a 12-megapixel photo, as long as resizing it, and no other thread runs meanwhile. An
image Pillow allocated in one block exports its pixels through the Arrow C data interface
(Pillow 11.2+); this module reads that export's data pointer and wraps it, so the kernels read
Pillow's own memory (RGB pixels are stored as RGBX there: the view skips the fourth byte).
:func:`use_single_block_images` makes Pillow allocate images that way (a process-wide switch:
the allocation strategy changes, no pixel does). An image in several blocks is copied as before.
"""
from __future__ import annotations

import ctypes

import numpy as np


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
                         ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64),
                         ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
                         ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p),
                         ("private_data", ctypes.c_void_p)]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                        ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
                        ("buffers", ctypes.POINTER(ctypes.c_void_p)),
                        ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
                        ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p),
                        ("private_data", ctypes.c_void_p)]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

#: bytes per pixel in Pillow's storage, and the channels the image has, by mode
_LAYOUT = {"RGB": (4, 3), "RGBA": (4, 4), "L": (1, 1)}


def use_single_block_images() -> None:
    """Have Pillow allocate each image in one block, so :func:`pixels` needs no copy."""
    import PIL.Image

    PIL.Image.core.set_use_block_allocator(1)


def _arrow_view(image) -> np.ndarray | None:
    stride, channels = _LAYOUT[image.mode]
    schema_capsule, array_capsule = image.__arrow_c_array__()
    schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
    expected = b"C" if stride == 1 else f"+w:{stride}".encode()
    if schema.format != expected or array.offset:
        return None
    if stride > 1:  # a fixed-size list of bytes per pixel: the bytes are its child's data buffer
        array = array.children[0].contents
        if array.offset:
            return None
    width, height = image.size
    if array.length != width * height * (stride if stride > 1 else 1) or not array.buffers[1]:
        return None
    memory = (ctypes.c_uint8 * array.length).from_address(array.buffers[1])
    memory.capsules = (schema_capsule, array_capsule)  # Pillow's memory lives while the view does
    view = np.frombuffer(memory, np.uint8).reshape(height, width, stride)
    return view[:, :, :channels]


def pixels(image) -> np.ndarray:
    """An RGB, RGBA or L image's pixels as (H, W, C) uint8: a read-only view of Pillow's memory
    when the image is one block, else a copy."""
    image.load()
    if image.mode in _LAYOUT and image.im.isblock():
        view = _arrow_view(image)
        if view is not None:
            return view
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array
