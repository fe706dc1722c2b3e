"""The public API documents itself, in PyTorch's style.

Walks ``iha.__all__``, ``iha.functional``, ``iha.flops``, ``iha.models.__all__`` and
``iha.hf.__all__`` (plus the cache classes) and checks, for every public class and function:
a docstring of its own; every parameter of the signature named in an ``Args:`` section (for a
class, its constructor's; for an ``nn.Module``, ``forward`` with its own docstring and Args);
an ``Example`` section whose doctest runs.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import json
import os
import pydoc
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import iha
import iha.flops
import iha.functional
import iha.models

SECTION = re.compile(r"^\s*(Args|Arguments|Returns|Return|Shape|Raises|Attributes|Examples?|"
                     r"Note|Notes|Yields|See Also|Warning)\s*:{1,2}\s*$")


def _public_api() -> dict[str, object]:
    objs: dict[str, object] = {}
    for name in iha.__all__:
        obj = getattr(iha, name)
        if not inspect.ismodule(obj):
            objs[f"iha.{name}"] = obj
    for module in (iha.functional, iha.flops):
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                objs[f"{module.__name__}.{name}"] = obj
    for name in iha.models.__all__:
        obj = getattr(iha.models, name)
        if callable(obj):
            objs[f"iha.models.{name}"] = obj
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        hf = importlib.import_module("iha.hf")
    except ImportError:  # transformers not installed: the hf extra is optional
        return objs
    for name in (*hf.__all__, "convert", "freeze_except_mixing", "load_converted"):
        objs[f"iha.hf.{name}"] = getattr(hf, name)
    return objs


API = _public_api()


def _own_doc(obj) -> str:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return inspect.cleandoc(doc or "")


def _section(doc: str, title: str) -> str:
    """The text of section ``title`` (``Args``, ``Example``...) of a docstring, or ''."""
    out, inside = [], False
    for line in doc.splitlines():
        head = SECTION.match(line)
        if head:
            inside = head.group(1).rstrip("s") == title.rstrip("s")
            continue
        if inside:
            out.append(line)
    return "\n".join(out)


def _documented(args: str, name: str) -> bool:
    """``name`` starts an entry of the Args section: ``name:``, ``name (type):``, ``a, name:``."""
    entry = rf"^\s+(\*{{0,2}}\w+,\s*)*\*{{0,2}}{re.escape(name)}\b[^\n:]*:"
    return re.search(entry, args, re.MULTILINE) is not None


def _parameters(fn) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p for p in sig.parameters if p not in ("self", "cls")]


def _constructor(cls):
    """The constructor whose parameters the class docstring documents (dataclasses included)."""
    return cls.__dict__.get("__init__")


def _checks(name: str, obj) -> list[str]:
    problems = []
    doc = _own_doc(obj)
    if not doc:
        return [f"{name}: no docstring"]
    if inspect.isclass(obj):
        init = _constructor(obj)
        params = _parameters(init) if init is not None else []
        if issubclass(obj, nn.Module):
            if inspect.getdoc(obj.__init__) == inspect.getdoc(nn.Module.__init__):
                problems.append(f"{name}.__init__: shows nn.Module's stock docstring")
            fwd = obj.__dict__.get("forward")
            fwd_doc = inspect.cleandoc((fwd.__doc__ or "") if fwd is not None else "")
            if fwd is not None:
                if not fwd_doc or fwd.__doc__ == nn.Module.forward.__doc__:
                    problems.append(f"{name}.forward: no docstring of its own")
                else:
                    args = _section(fwd_doc, "Args")
                    for p in _parameters(fwd):
                        if not _documented(args, p):
                            problems.append(f"{name}.forward: parameter {p!r} not in Args")
    else:
        params = _parameters(obj)
    args = _section(doc, "Args")
    for p in params:
        if not _documented(args, p):
            problems.append(f"{name}: parameter {p!r} not in Args")
    if ">>>" not in _section(doc, "Example"):
        problems.append(f"{name}: no Example section with a doctest")
    return problems


def test_the_walk_covers_the_public_api():
    names = set(API)
    for must in ("iha.InterleavedHeadAttention", "iha.functional.interleaved_head_attention",
                 "iha.KVCache", "iha.models.DecoderLM", "iha.models.ModelCache",
                 "iha.flops.layer_flops", "iha.models.generate"):
        assert must in names
    assert len(names) >= 40


@pytest.mark.parametrize("name", sorted(API))
def test_public_object_has_a_pytorch_style_docstring(name):
    assert _checks(name, API[name]) == []


def test_module_help_shows_no_stock_text():
    text = pydoc.render_doc(iha.InterleavedHeadAttention, renderer=pydoc.plaintext)
    # nn.Module's stock texts, read in a fresh interpreter: other tests' libraries may have
    # replaced those functions (and their docstrings) in this process
    code = ("import inspect, json, torch.nn as nn; print(json.dumps([inspect.cleandoc(f.__doc__)"
            ".splitlines()[0] for f in (nn.Module.__init__, nn.Module.forward)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    stock = json.loads(out.stdout)
    assert len(stock) == 2 and all(stock)
    for line in stock:
        assert line not in text
    for word in ("n_pseudo", "mask", "positions", "collapse", "kernel", "backend", "window",
                 "attention_mask", "Shape"):
        assert word in text, word


def _examples(obj) -> str:
    doc = _own_doc(obj)
    return _section(doc, "Example")


@pytest.mark.parametrize("name", sorted(API))
def test_examples_run(name):
    obj = API[name]
    text = _examples(obj)
    if ">>>" not in text:
        pytest.skip("no example (reported by the docstring test)")
    parser = doctest.DocTestParser()
    test = parser.get_doctest(inspect.cleandoc(text), {"torch": torch}, name, None, 0)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    failures: list[str] = []
    torch.manual_seed(0)
    before = torch.get_num_threads()
    try:
        result = runner.run(test, out=lambda s: failures.append(s))
    finally:
        torch.set_num_threads(before)
    assert result.failed == 0, "".join(failures)
