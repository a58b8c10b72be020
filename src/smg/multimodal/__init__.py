"""Image inputs, from ``image_url`` to the engine's tensors: ``media`` (fetch, decode, limits),
``processor`` / ``families`` (one processor per model family, equal to transformers'), the Numba
``kernels`` (twins: ``kernels_py``) and ``stage`` (the gateway's pipeline stage: placeholder
expansion and the engine's ``MultimodalTensors``). Nothing here is imported by ``import smg``:
Pillow, Numba and NumPy load when a model with an image processor starts."""
from __future__ import annotations

#: The implemented processor families (``ModelConfig.image_processor``).
FAMILIES = ("qwen2_vl", "qwen3_vl", "llava", "llava_next", "pixtral", "llama4", "phi4_multimodal")


def warm_up() -> None:
    """Load the kernels (compiled at first import, from the on-disk cache after), so no request
    pays for it, and have Pillow allocate images in one block each, so decoded pixels reach the
    kernels without a copy (a process-wide Pillow setting: see :mod:`smg.multimodal.pixels`)."""
    from smg.multimodal.pixels import use_single_block_images
    from smg.multimodal.processor import kernels

    kernels()
    use_single_block_images()


def __getattr__(name: str):
    if name == "ImageProcessor":
        from smg.multimodal.processor import ImageProcessor

        return ImageProcessor
    raise AttributeError(name)


__all__ = ["FAMILIES", "ImageProcessor", "warm_up"]
