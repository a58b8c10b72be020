"""Images through the gateway: media fetching and its limits, placeholder expansion, the engine's
tensors over both protocols, the reference engine's checks, and `smg serve` end to end with the
official `openai` client. The vision model directory is the shipped Llama 3.2 tokenizer with
Qwen2-VL's image tokens added and a chat template that renders them."""
import asyncio
import base64
import contextlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import openai
import PIL.Image
import pytest

from smg.config import ConfigError, GatewayConfig
from smg.engine import ReferenceEngine
from smg.engines import GenerateRequest, MultimodalTensors
from smg.errors import InvalidImage, InvalidRequest, UnsupportedFeature
from smg.gateway import Gateway
from smg.multimodal.media import MediaPolicy, decode_image, load_bytes
from smg.multimodal.processor import ImageProcessor
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir

IMAGE_MARKUP = {"qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>", "pixtral": "[IMG]", "llava_next": "<image>",
                "llama4": "<|image|>", "phi4_multimodal": "<|image|>"}
TEMPLATE = ("{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
            "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}"
            "{% if p.type == 'image' %}IMAGE{% else %}{{ p.text }}{% endif %}"
            "{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
            "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
PREPROCESSOR = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16}  # 4 to 16 tokens per image (qwen2_vl)
FAMILY_CONFIG = {"qwen2_vl": PREPROCESSOR, "pixtral": {"size": {"longest_edge": 64}},
                 "llava_next": {"size": {"shortest_edge": 28}, "crop_size": {"height": 28, "width": 28},
                                "image_grid_pinpoints": [[28, 56], [56, 28], [56, 56]]},
                "llama4": {"size": {"height": 28, "width": 28}, "max_patches": 4},  # 1 token a tile
                "phi4_multimodal": {"dynamic_hd": 4}}


def png(width, height, seed=0, mode="RGB", fmt="PNG"):
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def data_url(data, kind="image/png"):
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def vl_dir(tmp_path_factory):
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    directory = tmp_path_factory.mktemp("vl-model")
    source = bundled_tokenizer_dir("llama3.2")
    for path in source.iterdir():
        if path.is_file():
            shutil.copy(path, directory / path.name)
    hf = HFTokenizer.from_file(str(directory / "tokenizer.json"))
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t in ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<image>", "[IMG]",
                                     "[IMG_BREAK]", "[IMG_END]", "<|image|>", "<|image_start|>", "<|image_end|>",
                                     "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>")])
    hf.save(str(directory / "tokenizer.json"))
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    for family, markup in IMAGE_MARKUP.items():
        (directory / f"{family}.json").write_text(json.dumps(FAMILY_CONFIG[family]))
        (directory / f"{family}.jinja").write_text(TEMPLATE.replace("IMAGE", markup))
    (directory / "vl_template.jinja").write_text(TEMPLATE.replace("IMAGE", IMAGE_MARKUP["qwen2_vl"]))
    return directory


class ImageServer:
    """A real HTTP server on 127.0.0.1 with a few routes: images, a text page, a redirect, a slow one."""

    def __init__(self, routes):
        routes = dict(routes)
        self.hosts = hosts = []  # each request's Host header

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hosts.append(self.headers.get("Host"))
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                status, headers, body = route
                if status == "slow":
                    time.sleep(2)
                    status = 200
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def images():
    server = ImageServer({
        "/a.png": (200, {"Content-Type": "image/png"}, png(200, 120, 1)),
        "/b.jpg": (200, {"Content-Type": "image/jpeg"}, png(90, 300, 2, fmt="JPEG")),
        "/page": (200, {"Content-Type": "text/html"}, b"<html></html>"),
        "/moved": (302, {"Location": "/a.png"}, b""),
        "/slow.png": ("slow", {"Content-Type": "image/png"}, png(10, 10)),
        "/big.png": (200, {"Content-Type": "image/png"}, b"\x89PNG" + b"\0" * 5000),
    })
    yield server
    server.close()


def run(coro):
    return asyncio.run(coro)


# ---- media -------------------------------------------------------------------------------------

def test_data_urls_and_their_errors():
    policy = MediaPolicy()
    data = png(8, 8)
    assert run(load_bytes(data_url(data), "image 1", policy, None)) == data
    with pytest.raises(InvalidImage, match="image 1: data URL of type 'text/plain'"):
        run(load_bytes("data:text/plain;base64,aGk=", "image 1", policy, None))
    with pytest.raises(InvalidImage, match="malformed"):
        run(load_bytes("data:image/png;base64,!!!", "image 1", policy, None))
    with pytest.raises(InvalidImage, match="over the"):
        run(load_bytes(data_url(b"x" * 3000), "image 1", MediaPolicy(max_bytes=1000), None))
    with pytest.raises(InvalidImage, match="unsupported URL scheme 'ftp'"):
        run(load_bytes("ftp://example.com/a.png", "image 1", policy, None))


def test_decode_refuses_non_images_truncation_and_bombs():
    policy = MediaPolicy(max_pixels=1_000_000)
    with pytest.raises(InvalidImage, match="image 2: not a readable image"):
        decode_image(b"hello, not an image", "image 2", policy)
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        decode_image(png(300, 300, 3)[:2000], "image 2", policy)
    # PNGs of a few KiB declaring many pixels: refused from the header, before any pixel is decoded.
    for side, message in [(2000, "2000x2000 is over the 1000000 pixel limit"), (20000, "decompression bomb")]:
        buffer = io.BytesIO()
        PIL.Image.new("L", (side, side)).save(buffer, "PNG")
        assert len(buffer.getvalue()) < 1_000_000
        with pytest.raises(InvalidImage, match=message):
            decode_image(buffer.getvalue(), "image 2", policy)


def test_decode_applies_exif_orientation():
    image = PIL.Image.new("RGB", (40, 10))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), "image 1", MediaPolicy()).size == (10, 40)


def test_http_fetch_is_refused_for_loopback_unless_allowed(images):
    import httpx

    async def fetch(url, policy):
        async with httpx.AsyncClient() as client:
            return await load_bytes(url, "image 1", policy, client)

    with pytest.raises(InvalidImage, match="127.0.0.1 resolves to 127.0.0.1, a private, loopback"):
        run(fetch(images.url + "/a.png", MediaPolicy()))
    with pytest.raises(InvalidImage, match="resolves to ::1|resolves to 127"):
        run(fetch(f"http://localhost:{images.port}/a.png", MediaPolicy()))
    allowed = MediaPolicy(url_allow_list=("127.0.0.0/8",), fetch_timeout=0.5, max_bytes=4000)
    assert run(fetch(images.url + "/a.png", MediaPolicy(url_allow_list=("127.0.0.1",)))) == png(200, 120, 1)
    assert run(fetch(images.url + "/moved", MediaPolicy(url_allow_list=("127.0.0.1",)))) == png(200, 120, 1)
    with pytest.raises(InvalidImage, match="text/html, not an image"):
        run(fetch(images.url + "/page", allowed))
    with pytest.raises(InvalidImage, match="HTTP 404"):
        run(fetch(images.url + "/missing.png", allowed))
    with pytest.raises(InvalidImage, match="took more than 0.5 s"):
        run(fetch(images.url + "/slow.png", allowed))
    with pytest.raises(InvalidImage, match="over the 4000 bytes limit"):
        run(fetch(images.url + "/big.png", allowed))
    assert not MediaPolicy().address_allowed("169.254.169.254")  # cloud metadata (link-local)
    assert not MediaPolicy().address_allowed("10.1.2.3") and not MediaPolicy().address_allowed("fe80::1")
    assert MediaPolicy().address_allowed("93.184.216.34")


def test_fetch_connects_to_the_address_it_checked(images, monkeypatch):
    """The name is looked up once: the request goes to the checked address, with the name in its
    Host header. (images.test exists only in this lookup: a second lookup by the system would fail.)"""
    import httpx

    seen = []
    real = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def lookup(loop, host, port, *args, **kwargs):
        seen.append(host)
        if host == "images.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return await real(loop, host, port, *args, **kwargs)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", lookup)

    async def fetch(url, policy):
        async with httpx.AsyncClient(trust_env=False) as client:
            return await load_bytes(url, "image 1", policy, client)

    url = f"http://images.test:{images.port}/a.png"
    with pytest.raises(InvalidImage, match="images.test resolves to 127.0.0.1"):
        run(fetch(url, MediaPolicy()))
    assert run(fetch(url, MediaPolicy(url_allow_list=("127.0.0.0/8",)))) == png(200, 120, 1)
    assert run(fetch(f"http://images.test:{images.port}/moved", MediaPolicy(url_allow_list=("127.0.0.1",)))) \
        == png(200, 120, 1)  # (the redirect's relative location is resolved against images.test)
    assert set(seen) == {"images.test"}
    assert images.hosts[-1] == f"images.test:{images.port}"


def test_file_urls_only_inside_allowed_dirs(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.png").write_bytes(png(5, 5))
    (tmp_path / "secret.png").write_bytes(png(5, 5))
    with pytest.raises(InvalidImage, match="file:// URLs are off"):
        run(load_bytes(f"file://{tmp_path}/ok/a.png", "image 1", MediaPolicy(), None))
    policy = MediaPolicy(allowed_dirs=(str(tmp_path / "ok"),))
    assert run(load_bytes(f"file://{tmp_path}/ok/a.png", "image 1", policy, None)) == png(5, 5)
    with pytest.raises(InvalidImage, match="outside the allowed media directories"):
        run(load_bytes(f"file://{tmp_path}/ok/../secret.png", "image 1", policy, None))


def test_config_checks_media_keys():
    with pytest.raises(ConfigError, match="unknown image_processor 'qwen9'"):
        GatewayConfig.load({"workers": ["grpc://127.0.0.1:1"], "image_processor": "qwen9"})
    with pytest.raises(ConfigError, match="url_allow_list"):
        GatewayConfig.load({"url_allow_list": ["10.0.0.0/99"]})
    assert GatewayConfig.load({"url_allow_list": ["10.0.0.0/8", "images.internal"]}).media.max_images == 16
    assert not GatewayConfig.load({}).media.pin_threads
    assert GatewayConfig.load({"media": {"pin_threads": True}}).media.pin_threads


def _threads_affinities(pool, count):
    """Each of the pool's ``count`` threads' CPU set, every thread at once (held at a barrier)."""
    barrier = threading.Barrier(count)

    def affinity():
        barrier.wait(10)
        return frozenset(os.sched_getaffinity(0))  # (0: the calling thread)

    return [future.result(10) for future in [pool.submit(affinity) for _ in range(count)]]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_image_threads_are_pinned_each_to_its_own_cpu_only_when_asked():
    from smg.multimodal.stage import image_threads

    cpus = frozenset(os.sched_getaffinity(0))
    with image_threads(count=len(cpus)) as plain:
        assert _threads_affinities(plain, len(cpus)) == [cpus] * len(cpus)
    with image_threads(pin=True) as pinned:  # (one thread per CPU the process may run on)
        affinities = _threads_affinities(pinned, len(cpus))
    assert all(len(one) == 1 for one in affinities) and frozenset().union(*affinities) == cpus
    assert frozenset(os.sched_getaffinity(0)) == cpus  # (the caller's own is untouched)


# ---- through the gateway -----------------------------------------------------------------------

@contextlib.asynccontextmanager
async def vl_gateway(vl_dir, engine="sglang", **extra):
    reference = ReferenceEngine(Tokenizer.from_dir(vl_dir), mode="echo", tokenizer_dir=vl_dir)
    server = reference.server()
    port = await server.start()
    preprocessor = extra.pop("models_preprocessor", None)
    model = {"workers": [f"grpc://127.0.0.1:{port}"], "tokenizer": str(vl_dir), "engine": engine,
             "chat_template": str(vl_dir / "vl_template.jinja"), "image_processor": "qwen2_vl",
             "preprocessor_config": preprocessor}
    gateway_keys = {key: extra.pop(key) for key in list(extra) if key in ("url_allow_list", "media",
                                                                            "trust_request_chat_template")}
    config = {"models": [{k: v for k, v in {**model, **extra}.items() if v is not None}], **gateway_keys}
    gateway = Gateway.from_config(config)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.close()
        await server.stop()


def chat(*parts, max_tokens=4):
    return {"messages": [{"role": "user", "content": [*parts]}], "max_tokens": max_tokens}


def image_part(url, detail=None):
    part = {"type": "image_url", "image_url": {"url": url}}
    if detail:
        part["image_url"]["detail"] = detail
    return part


def expected_prompt_tokens(vl_dir, text_parts, image_bytes, family="qwen2_vl"):
    """The prompt's length after expansion, computed independently of the gateway's stage."""
    tokenizer = Tokenizer.from_dir(vl_dir)
    processor = ImageProcessor.create(family, FAMILY_CONFIG[family])
    token_ids = {t: tokenizer.token_to_id(t) for t in (processor.image_token, *processor.structure_tokens)}
    counts = [len(processor.placeholder_ids(processor.process_one(PIL.Image.open(io.BytesIO(b))), token_ids))
              for b in image_bytes]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text_parts}], add_generation_prompt=True,
                                           chat_template=TEMPLATE.replace("IMAGE", IMAGE_MARKUP[family]))
    return len(tokenizer.encode(prompt)) - len(counts) + sum(counts)


@pytest.mark.end_to_end
@pytest.mark.parametrize("family, engine", [("pixtral", "vllm"), ("llava_next", "sglang"), ("llama4", "vllm"),
                                            ("phi4_multimodal", "vllm")])
def test_other_families_through_the_gateway(vl_dir, family, engine):
    async def main():
        async with vl_gateway(vl_dir, engine, image_processor=family, chat_template=str(vl_dir / f"{family}.jinja"),
                              models_preprocessor=str(vl_dir / f"{family}.json")) as gateway:
            return await gateway.chat(chat(image_part(data_url(png(100, 40, 3))), {"type": "text", "text": "hi"},
                                           image_part(data_url(png(20, 70, 4)))))

    response = run(main())
    parts = [{"type": "image"}, {"type": "text", "text": "hi"}, {"type": "image"}]
    assert response.usage.prompt_tokens == expected_prompt_tokens(vl_dir, parts, [png(100, 40, 3), png(20, 70, 4)],
                                                                  family)


@pytest.mark.end_to_end
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_the_gateway_pins_its_image_threads_when_configured(vl_dir):
    async def main():
        async with vl_gateway(vl_dir, media={"pin_threads": True}) as gateway:
            response = await gateway.chat(chat({"type": "text", "text": "Look: "}, image_part(data_url(png(64, 48, 3))),
                                               image_part(data_url(png(40, 40, 4)))))
            stage = next(iter(gateway.models)).images
            return response, await asyncio.to_thread(_threads_affinities, stage._threads, len(os.sched_getaffinity(0)))

    response, affinities = run(main())
    assert response.choices[0].finish_reason == "length"
    assert all(len(one) == 1 for one in affinities) and len(set(affinities)) == len(affinities)


@pytest.mark.end_to_end
@pytest.mark.parametrize("engine", ["sglang", "vllm"])
def test_chat_with_two_images_reaches_the_engine_with_consistent_tensors(vl_dir, images, engine):
    async def main():
        async with vl_gateway(vl_dir, engine, url_allow_list=["127.0.0.1"]) as gateway:
            return await gateway.chat(chat({"type": "text", "text": "Compare "},
                                           image_part(data_url(png(64, 48, 7)), "low"),
                                           {"type": "text", "text": " and "},
                                           image_part(images.url + "/b.jpg")))

    response = run(main())
    parts = [{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " and "},
             {"type": "image"}]
    with urlopen_bytes(images.url + "/b.jpg") as jpeg:
        assert response.usage.prompt_tokens == expected_prompt_tokens(vl_dir, parts, [png(64, 48, 7), jpeg])
    assert response.choices[0].finish_reason == "length"


@contextlib.contextmanager
def urlopen_bytes(url):
    import urllib.request

    with urllib.request.urlopen(url) as handle:
        yield handle.read()


@pytest.mark.end_to_end
def test_image_errors_are_400s_naming_the_image(vl_dir, images):
    async def main():
        results = {}
        async with vl_gateway(vl_dir) as gateway:
            cases = {
                "loopback": chat(image_part(images.url + "/a.png")),
                "not an image": chat({"type": "text", "text": "x"}, image_part(data_url(b"plain text"))),
                "aspect": chat(image_part(data_url(png(1000, 4)))),
                # (several images are preprocessed as one batch: the refusal still names its image)
                "second's aspect": chat(image_part(data_url(png(30, 30))), image_part(data_url(png(4, 1000)))),
                "no placeholder": {"messages": [{"role": "user", "content": [image_part(data_url(png(8, 8)))]}],
                                   "chat_template": "{{ messages[0].role }}", "max_tokens": 2},
                "bad detail": chat(image_part(data_url(png(8, 8)), "ultra")),
                "too many": chat(*[image_part(data_url(png(8, 8)))] * 17),
            }
            for name, request in cases.items():
                try:
                    await gateway.chat(request)
                    results[name] = None
                except InvalidRequest as exc:  # InvalidImage is one
                    results[name] = (exc.status_code, exc.message)
            # one request's bad image does not harm the next
            ok = await gateway.chat(chat(image_part(data_url(png(30, 30)))))
        return results, ok

    results, ok = run(main())
    assert results["loopback"][0] == 400 and "image 1 (messages[0].content[0])" in results["loopback"][1]
    assert "image 1 (messages[0].content[1]): not a readable image" in results["not an image"][1]
    assert "image 1 (messages[0].content[0]): image aspect ratio 250.0 is over 200" in results["aspect"][1]
    assert "image 2 (messages[0].content[1]): image aspect ratio 250.0" in results["second's aspect"][1]
    assert "chat_template in a request is off" in results["no placeholder"][1]
    assert "detail must be" in results["bad detail"][1]
    assert "17 images in one request; at most 16" in results["too many"][1]
    assert ok.choices[0].message.content is not None


@pytest.mark.end_to_end
def test_a_batch_the_images_cannot_make_is_refused_as_a_batch():
    """Images each fine alone that do not go together (channel counts, with do_convert_rgb off):
    the stage's search for the refused image finds none, and the batch's own refusal stands; a
    request's batch equals the processor's own."""
    from smg.multimodal.stage import ImageStage

    processor = ImageProcessor.create("qwen2_vl", {"do_convert_rgb": False})
    stage = ImageStage(processor, {"<|image_pad|>": 7}, MediaPolicy(), max_images=4)
    gray, rgb = PIL.Image.new("L", (56, 56), 9), PIL.Image.new("RGB", (56, 84), (1, 2, 3))
    try:
        with pytest.raises(InvalidImage, match="different channel counts") as refused:
            stage._preprocess([gray, rgb], ["image 1", "image 2"])
        assert "image 1" not in refused.value.message and "image 2" not in refused.value.message
        both = PIL.Image.new("RGB", (84, 56), (4, 5, 6))
        processed, batch = stage._preprocess([rgb, both], ["image 1", "image 2"])
        expected = processor([rgb, both])
        assert all(np.array_equal(batch[key], expected[key]) for key in expected) and len(processed) == 2
    finally:
        run(stage.close())


def test_template_without_image_placeholder_is_a_400(vl_dir):
    async def main():
        async with vl_gateway(vl_dir, trust_request_chat_template=True) as gateway:
            await gateway.chat({"messages": [{"role": "user", "content": [image_part(data_url(png(8, 8)))]}],
                                "chat_template": "{{ messages[0].role }}", "max_tokens": 2})

    with pytest.raises(InvalidRequest, match="0 image placeholder"):
        run(main())


@pytest.mark.end_to_end
def test_a_model_without_an_image_processor_refuses_images(vl_dir):
    async def main():
        async with vl_gateway(vl_dir, image_processor=None) as gateway:
            await gateway.chat(chat(image_part(data_url(png(8, 8)))))

    with pytest.raises(UnsupportedFeature, match="does not take images"):
        run(main())


@pytest.mark.end_to_end
@pytest.mark.parametrize("engine", ["sglang", "vllm"])
def test_reference_engine_refuses_inconsistent_tensors(vl_dir, engine):
    processor = ImageProcessor.create("qwen2_vl", PREPROCESSOR)
    image = processor.process_one(PIL.Image.open(io.BytesIO(png(60, 60))))
    layout = processor.layout([image])

    def tensors(**changes):
        values = dict(pixel_values=image.arrays["pixel_values"],
                      extra={"image_grid_thw": image.arrays["image_grid_thw"], **layout.extra},
                      image_token_id=token, placeholders=((1, image.num_tokens),),
                      batched_keys=layout.batched_keys, flat_keys=layout.flat_keys)
        return MultimodalTensors(**{**values, **changes})

    token = Tokenizer.from_dir(vl_dir).token_to_id("<|image_pad|>")
    ids = [1] + [token] * image.num_tokens + [2, 3]

    bad = {
        "placeholder past its tokens": (tensors(placeholders=((3, image.num_tokens),)), ids),
        "grid disagrees with the rows": (tensors(pixel_values=image.arrays["pixel_values"][:-4]), ids),
        "image token outside the ranges": (tensors(), ids + [token]),
        "sizes do not add up": (tensors(extra={"image_grid_thw": image.arrays["image_grid_thw"],
                                               "patches_per_image": np.array([3], np.int64)}), ids),
    }

    async def main():
        refused = {}
        async with vl_gateway(vl_dir, engine) as gateway:
            served = gateway.models.default
            async for _ in served.pool.generate(GenerateRequest("mm-ok", ids, multimodal=tensors())):
                pass  # consistent: accepted
            for name, (mm, prompt) in bad.items():
                try:
                    async for _ in served.pool.generate(GenerateRequest(f"mm-{len(refused)}", prompt, multimodal=mm)):
                        pass
                    refused[name] = None
                except InvalidRequest as exc:
                    refused[name] = exc.message
        return refused

    refused = run(main())
    for name, message in refused.items():
        if name == "sizes do not add up" and engine == "sglang":
            assert message is None  # SGLang's protocol has no flat keys: the sizes tensor is not read
            continue
        assert message is not None and "engine rejected the request" in message and "mm_inputs" in message, name


@pytest.mark.end_to_end
def test_smg_serve_end_to_end_with_two_images(vl_dir, images):
    reference = ReferenceEngine(Tokenizer.from_dir(vl_dir), mode="echo", tokenizer_dir=vl_dir)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    server = reference.server()
    grpc_port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    with socket_port() as http_port:
        pass
    proc = subprocess.Popen([sys.executable, "-m", "smg", "serve", "--worker", f"grpc://127.0.0.1:{grpc_port}",
                             "--tokenizer", str(vl_dir), "--chat-template", str(vl_dir / "vl_template.jinja"),
                             "--image-processor", "qwen2_vl", "--allow-url-host", "127.0.0.1",
                             "--port", str(http_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused", max_retries=0)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.2)
        content = [{"type": "text", "text": "What differs?"}, image_part(images.url + "/a.png"),
                   image_part(data_url(png(33, 77, 9)), "high")]
        response = client.chat.completions.create(model="smg-reference", max_tokens=3,
                                                  messages=[{"role": "user", "content": content}])
        parts = [{"type": "text", "text": "What differs?"}, {"type": "image"}, {"type": "image"}]
        assert response.usage.prompt_tokens == expected_prompt_tokens(vl_dir, parts,
                                                                      [png(200, 120, 1), png(33, 77, 9)])
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="smg-reference", max_tokens=3, messages=[
                {"role": "user", "content": [image_part(data_url(b"GIF89a broken"))]}])
        assert refused.value.status_code == 400 and "image 1" in refused.value.message
        stream = client.chat.completions.create(model="smg-reference", max_tokens=3, stream=True,
                                                messages=[{"role": "user", "content": content}])
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    finally:
        proc.terminate()
        proc.wait(30)
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)


@contextlib.contextmanager
def socket_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_engine_check_of_tiled_images():
    """Llama 4's tiles: pixel_values rows must be the aspect ratios' tiles (and a global tile when
    several), with the same number of image tokens per tile."""
    from smg_grpc_proto.generated import vllm_engine_pb2 as vpb

    from smg.engine.multimodal_check import check_multimodal
    from smg.engines.base import proto_mm_inputs

    processor = ImageProcessor.create("llama4", FAMILY_CONFIG["llama4"])
    images = [processor.process_one(PIL.Image.open(io.BytesIO(png(*size)))) for size in ((60, 30), (20, 20))]
    names = ("<|image|>", *processor.structure_tokens)
    token_ids = {name: 500 + i for i, name in enumerate(names)}
    ids, placeholders = [1], []
    for image in images:
        expansion = processor.placeholder_ids(image, token_ids)
        placeholders.append((len(ids), len(expansion)))
        ids += expansion + [2]
    batch = processor.collate(images)
    layout = processor.layout(images)

    def check(pixel_values=batch["pixel_values"], aspect_ratios=batch["aspect_ratios"], prompt=ids):
        mm = MultimodalTensors(pixel_values=pixel_values, extra={"aspect_ratios": aspect_ratios, **layout.extra},
                               image_token_id=token_ids["<|patch|>"], placeholders=placeholders,
                               batched_keys=layout.batched_keys, flat_keys=layout.flat_keys)
        message = proto_mm_inputs(vpb, mm, "inline", batched_keys=list(mm.batched_keys), flat_keys=dict(mm.flat_keys))
        return check_multimodal(prompt, message, "inline", vllm=True)

    assert batch["aspect_ratios"].tolist() == [[1, 2], [1, 1]]  # 60x30 in 2 tiles + a global one; 20x20 in 1
    assert check() is None
    assert "aspect_ratios says" in check(aspect_ratios=np.array([[1, 1], [1, 1]], np.int64))
    assert "tiles" in check(pixel_values=batch["pixel_values"][:-1])
    patch = token_ids["<|patch|>"]
    assert "outside the placeholders" in check(prompt=ids + [patch])


@pytest.mark.end_to_end
def test_images_through_the_responses_and_messages_apis(vl_dir):
    """``input_image`` (Responses) and ``image`` blocks (Messages, base64 and URL) take the image
    pipeline: the prompt is the chat's with the same images."""
    from smg.api import anthropic as messages_api

    first, second = png(64, 48, 7), png(30, 90, 8)
    b64 = base64.b64encode(second).decode()

    async def main():
        async with vl_gateway(vl_dir) as gateway:
            response = await gateway.responses({"input": [{"role": "user", "content": [
                {"type": "input_text", "text": "Compare "}, {"type": "input_image", "image_url": data_url(first)},
                {"type": "input_text", "text": " and "}, {"type": "input_image", "image_url": data_url(second)}]}],
                "max_output_tokens": 4, "store": False})
            message = await gateway.messages({"model": "", "max_tokens": 4, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Compare "},
                {"type": "image", "source": {"type": "url", "url": data_url(first)}},
                {"type": "text", "text": " and "},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}}]}]})
            counted = await messages_api.count_tokens(gateway, {"model": "", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Compare "},
                {"type": "image", "source": {"type": "url", "url": data_url(first)}},
                {"type": "text", "text": " and "},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}}]}]})
            return response, message, counted

    response, message, counted = run(main())
    parts = [{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " and "},
             {"type": "image"}]
    expected = expected_prompt_tokens(vl_dir, parts, [first, second])
    assert response["usage"]["input_tokens"] == message["usage"]["input_tokens"] == expected
    assert counted == {"input_tokens": expected}  # count_tokens counts the images' tokens too
