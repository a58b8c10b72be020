"""Stage ``multimodal``: a chat's image parts -> fetched and decoded images (each as its bytes
arrive) -> one batch, each image preprocessed on a thread of its own into its part of it (the
kernels releasing the GIL) -> the prompt's image placeholder expanded to each image's token count
-> the engine's :class:`MultimodalTensors`."""
from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from smg.config import ConfigError
from smg.engines.base import MultimodalTensors
from smg.errors import InvalidImage, InvalidRequest
from smg.multimodal.media import MediaPolicy, decode_image, load_bytes
from smg.multimodal.processor import ImageProcessor, ProcessedImage


@dataclass(frozen=True)
class ImageRef:
    """One ``image_url`` part of a request: its URL, ``detail``, and a name for error messages."""

    url: str
    detail: str
    name: str


def image_threads(pin: bool = False, count: int | None = None) -> ThreadPoolExecutor:
    """The pool a request's images are preprocessed on: ``count`` threads, by default one per CPU
    this process may run on; with ``pin`` (Linux), each bound to its own CPU, round robin.

    Why pin: on a virtual machine, a thread woken by another (each GIL hand-over between two
    images' threads is a wake-up) can be placed on its waker's busy CPU while the other virtual CPU
    sleeps, and the two images then share one CPU for milliseconds. Bound threads cannot be. A
    4-image LLaVA request on two threads ran x1.51-1.58 one thread's speed after an idle moment and
    x1.71-1.74 bound, and x1.15 against x1.86 while the host was busy (BENCHMARKS.md). It is off by
    default: a bound thread cannot move off a CPU that something else (another ``--workers``
    process, say) keeps busy."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    count = count or len(cpus) or os.cpu_count() or 2
    if not pin:
        return ThreadPoolExecutor(count, thread_name_prefix="smg-images")
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError("pinning image threads to CPUs needs Linux's sched_setaffinity, which this platform lacks")
    starting, assigned = threading.Lock(), itertools.count()

    def bind() -> None:
        with starting:
            index = next(assigned)
        os.sched_setaffinity(threading.get_native_id(), {cpus[index % len(cpus)]})

    return ThreadPoolExecutor(count, thread_name_prefix="smg-images", initializer=bind)


class ImageStage:
    """One model's image path: its processor, its image token and the gateway's media policy."""

    def __init__(self, processor: ImageProcessor, token_ids: Mapping[str, int], policy: MediaPolicy,
                 max_images: int, pin_threads: bool = False) -> None:
        self.processor = processor
        self.token_ids = dict(token_ids)  # the family's image token and structure tokens
        self.image_token_id = token_ids[processor.image_token]  # the placeholder the template renders
        self.feature_token_id = token_ids[processor.feature_token or processor.image_token]
        self.policy = policy
        self.max_images = max_images
        self._client = None
        # a request's images' jobs (see _preprocess); its threads start with the first batch
        self._threads = image_threads(pin_threads)

    def _http(self):
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._threads.shutdown(wait=False)

    def _preprocess(self, images: Sequence, names: Sequence[str]) -> tuple[list[ProcessedImage], dict]:
        """The images' batch, each image written into its part by a thread of the stage's own pool
        (``ImageProcessor.process``: joining per-image arrays afterwards copied tens of MB on one
        thread, as long as a 4-image Qwen request's preprocessing took on two). The pool is not the
        event loop's default executor, whose thread this runs on: jobs waiting behind their own
        caller there could deadlock a busy gateway. A refusal names its image (the processor says
        which it refused)."""
        try:
            return self.processor.process(images, self._threads if len(images) > 1 else None)
        except InvalidImage as exc:
            if exc.image_index is None:  # (images that do not go together: channels, shapes)
                raise
            raise InvalidImage(f"{names[exc.image_index]}: {exc.message}") from None

    async def process(self, refs: Sequence[ImageRef]) -> tuple[list[ProcessedImage], dict]:
        """Every image of a request, fetched and decoded concurrently, then preprocessed into one
        batch on threads, in request order."""
        if len(refs) > self.max_images:
            raise InvalidImage(f"{len(refs)} images in one request; at most {self.max_images} are allowed")

        async def one(ref: ImageRef):
            data = await load_bytes(ref.url, ref.name, self.policy, self._http())
            return await asyncio.to_thread(decode_image, data, ref.name, self.policy)

        tasks = [asyncio.ensure_future(one(ref)) for ref in refs]
        try:
            images = list(await asyncio.gather(*tasks))
        finally:  # one image failed: the others stop too
            for task in tasks:
                task.cancel()
        return await asyncio.to_thread(self._preprocess, images, [ref.name for ref in refs])

    def expand(self, prompt_ids: Sequence[int], processed: tuple[Sequence[ProcessedImage], dict]
               ) -> tuple[list[int], MultimodalTensors]:
        """``prompt_ids`` with each image placeholder token expanded to its image's tokens, and the
        tensors (``process``'s batch) with those ranges."""
        images, batch = processed
        token = self.image_token_id
        found = [i for i, t in enumerate(prompt_ids) if t == token]
        if len(found) != len(images):
            raise InvalidRequest(f"the prompt holds {len(found)} image placeholder(s) for {len(images)} image(s): "
                                 f"the model's chat template must render one per image part")
        ids: list[int] = []
        placeholders = []
        start = 0
        for position, image in zip(found, images):
            ids += prompt_ids[start:position]
            expansion = self.processor.placeholder_ids(image, self.token_ids)
            placeholders.append((len(ids), len(expansion)))
            ids += expansion
            start = position + 1
        ids += prompt_ids[start:]
        layout = self.processor.layout(images)
        pixel_values = batch[self.processor.pixel_key]
        extra = {**{key: value for key, value in batch.items() if key != self.processor.pixel_key}, **layout.extra}
        return ids, MultimodalTensors(pixel_values=pixel_values, extra=extra, image_token_id=self.feature_token_id,
                                      placeholders=tuple(placeholders), batched_keys=layout.batched_keys,
                                      flat_keys=layout.flat_keys)
