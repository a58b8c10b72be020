"""Stage ``multimodal``: a chat's image parts -> fetched, decoded, preprocessed images (each on a
thread of its own, the kernels releasing the GIL) -> the prompt's image placeholder expanded to
each image's token count -> the engine's :class:`MultimodalTensors`."""
from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


class ImageStage:
    """One model's image path: its processor, its image token and the gateway's media policy."""

    def __init__(self, processor: ImageProcessor, token_ids: Mapping[str, int], policy: MediaPolicy,
                 max_images: int) -> None:
        self.processor = processor
        self.token_ids = dict(token_ids)  # the family's image token and structure tokens
        self.image_token_id = token_ids[processor.image_token]  # the placeholder the template renders
        self.feature_token_id = token_ids[processor.feature_token or processor.image_token]
        self.policy = policy
        self.max_images = max_images
        self._client = None

    def _http(self):
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _decode_and_process(self, data: bytes, name: str) -> ProcessedImage:
        image = decode_image(data, name, self.policy)
        try:
            return self.processor.process_one(image)
        except InvalidImage as exc:
            raise InvalidImage(f"{name}: {exc.message}") from None

    async def process(self, refs: Sequence[ImageRef]) -> tuple[list[ProcessedImage], dict]:
        """Every image of a request, fetched and preprocessed concurrently, in request order, and
        their batch (joined on a thread too: tens of MB to copy, which the event loop must not)."""
        if len(refs) > self.max_images:
            raise InvalidImage(f"{len(refs)} images in one request; at most {self.max_images} are allowed")

        async def one(ref: ImageRef) -> ProcessedImage:
            data = await load_bytes(ref.url, ref.name, self.policy, self._http())
            return await asyncio.to_thread(self._decode_and_process, data, ref.name)

        tasks = [asyncio.ensure_future(one(ref)) for ref in refs]
        try:
            images = list(await asyncio.gather(*tasks))
        finally:  # one image failed: the others stop too
            for task in tasks:
                task.cancel()
        return images, await asyncio.to_thread(self.processor.collate, images)

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
