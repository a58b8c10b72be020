import asyncio
import importlib
import os
import random

import pytest
from hypothesis import settings

from benchmarks._torchvision import import_torchvision
from smg import _ext

# Before anything imports transformers: with torchvision installed (the test extra installs it, for
# the torchvision-only processors), transformers imports it, and PyPI's wheel needs this beside the
# CPU torch wheel (benchmarks/_torchvision.py).
HAS_TORCHVISION = import_torchvision()
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir

SEED = int(os.environ.get("SMG_TEST_SEED", random.randrange(1 << 30)))

# `make test` (and so CI) runs hypothesis derandomized: the same examples every run, so a landing
# never depends on luck; plain `pytest` explores new examples each run (failures print a replay blob).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("SMG_HYPOTHESIS_PROFILE", "explore"))


def pytest_report_header(config):
    mode = "pure-Python twins (SMG_NO_EXTENSIONS=1)" if _ext.USE_TWINS else "compiled kernels"
    return [f"smg kernels: {mode}", f"random seed: SMG_TEST_SEED={SEED}",
            f"hypothesis profile: {settings._current_profile}"]


@pytest.fixture
def rng():
    """A seeded random source; the seed is printed in the header so a failure can be replayed."""
    return random.Random(SEED)


@pytest.fixture(scope="session")
def llama_dir():
    return bundled_tokenizer_dir("llama3.2")


@pytest.fixture(scope="session")
def deepseek_dir():
    return bundled_tokenizer_dir("deepseek")


@pytest.fixture(scope="session")
def llama(llama_dir):
    return Tokenizer.from_dir(llama_dir)


@pytest.fixture(scope="session")
def deepseek(deepseek_dir):
    return Tokenizer.from_dir(deepseek_dir)


@pytest.fixture(scope="session", params=["llama3.2", "deepseek"])
def real_tokenizer(request, llama, deepseek):
    return {"llama3.2": llama, "deepseek": deepseek}[request.param]


def kernel_variants(name):
    """The compiled kernel and its twin; the compiled one is skipped under SMG_NO_EXTENSIONS=1."""
    return [
        pytest.param(f"smg._ext.{name}", id="c", marks=pytest.mark.compiled_only),
        pytest.param(f"smg._ext.{name}_py", id="py"),
    ]


def kernel_fixture(name):
    """A session fixture yielding the compiled kernel ``name`` and then its twin."""

    @pytest.fixture(scope="session", params=kernel_variants(name))
    def fixture(request):
        return importlib.import_module(request.param)

    return fixture


token_cache_impl = kernel_fixture("token_cache")
bpe_impl = kernel_fixture("bpe")
detok_impl = kernel_fixture("detok")
stop_impl = kernel_fixture("stop_matcher")
json_scan_impl = kernel_fixture("json_scan")
reasoning_impl = kernel_fixture("reasoning_scan")
tool_scan_impl = kernel_fixture("tool_scan")
h2_data_impl = kernel_fixture("h2_data")
proto_chunk_impl = kernel_fixture("proto_chunk")


@pytest.fixture(scope="session")
def sentencepiece_dir(tmp_path_factory):
    """A small SentencePiece-style tokenizer (Metaspace + ByteFallback decoder), built here, to
    exercise the detokenizer's general path on a decoder the byte table cannot express."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["▁", "▁the", "▁hello", "▁world", "h", "e", "l", "o", "w", "r", "d", "t", ".", ",", "'",
                  "s", "▁'", "▁.", "é", "日", "本", "▁n't", "n"]:
        vocab.setdefault(piece, len(vocab))
    backend = Backend(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    backend.add_special_tokens(["<s>", "</s>"])
    directory = tmp_path_factory.mktemp("sentencepiece")
    backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text('{"eos_token": "</s>", "bos_token": "<s>"}')
    return directory


async def first_items(stream, count: int):
    """The first ``count`` items of an async iterator (then it stops reading it)."""
    async for item in stream:
        yield item
        count -= 1
        if not count:
            return


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server started for this test session (tests/postgres_server.py)."""
    from postgres_server import PostgresServer

    server = PostgresServer().start()
    yield server
    try:
        server.stop()
    finally:
        server.remove()


async def until(condition, seconds: float = 10.0) -> None:
    """Wait (on the running loop) until ``condition()`` holds; fail after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)
