"""``iha lm-eval ARGS...``: EleutherAI's lm-evaluation-harness on ``iha`` models.

ARGS are ``lm_eval``'s own options, passed on unchanged after the ``iha`` model is registered
(:mod:`iha.eval.lm_eval_bridge`)::

    iha lm-eval --model iha --model_args pretrained=runs/sft --tasks gsm8k --num_fewshot 5

Needs ``pip install 'iha[eval]'``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Nothing to add: ``iha.cli.main`` passes everything after ``lm-eval`` to ``run``."""


def run(args: argparse.Namespace) -> int:
    from iha.eval.lm_eval_bridge import main

    return main(args.passthrough)
