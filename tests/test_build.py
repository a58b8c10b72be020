"""The compiled kernels are built and are the ones in use; `import smg` stays light."""
import importlib.machinery
import json
import subprocess
import sys
from pathlib import Path

import pytest

from smg import _ext

# every twin specifies a compiled kernel
KERNELS = sorted(p.stem[:-3] for p in Path(_ext.__file__).parent.glob("*_py.py"))


@pytest.mark.compiled_only
@pytest.mark.parametrize("name", KERNELS)
def test_compiled_kernel_is_built_and_bound(name):
    assert not _ext.USE_TWINS, "the compiled suite must not run with SMG_NO_EXTENSIONS=1"
    module = _ext.load(name)
    assert module.__name__ == f"smg._ext.{name}"
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), module.__file__


def test_the_kernel_list_is_found():
    assert {"bpe", "detok", "proto_chunk", "sse_pump", "token_cache"} <= set(KERNELS)


@pytest.mark.compiled_only
def test_tokenizer_cache_binds_the_compiled_kernel():
    from smg.tokenizer import cache

    assert cache.kernel.__name__ == "smg._ext.token_cache"


def test_no_extensions_switch_selects_twins():
    code = "from smg.tokenizer import cache; print(cache.kernel.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env={"SMG_NO_EXTENSIONS": "1", "PATH": ""},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "smg._ext.token_cache_py"


def test_import_smg_is_light():
    code = ("import sys, smg; heavy = ['grpc', 'numba', 'jinja2', 'torch', 'tokenizers', 'transformers'];"
            "import json; print(json.dumps([m for m in heavy if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


STUBS = sorted(Path(_ext.__file__).parent.glob("*.pyi"))


@pytest.mark.compiled_only
@pytest.mark.parametrize("stub", STUBS, ids=lambda p: p.stem)
def test_a_type_stub_names_only_what_its_compiled_module_has(stub):
    """A stub that drifts from its kernel misleads type checkers: each public function, constant,
    class and method it names exists on the compiled module."""
    import ast

    module = _ext.load(stub.stem)
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AnnAssign)):
            name = node.name if isinstance(node, ast.FunctionDef) else node.target.id
            assert hasattr(module, name), (stub.stem, name)
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            cls = getattr(module, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    assert hasattr(cls, item.name), (stub.stem, node.name, item.name)


def test_every_kernel_has_a_type_stub():
    assert {p.stem for p in STUBS} == set(KERNELS)
