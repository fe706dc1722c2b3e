"""Evaluation: metrics, GSM8K, MATH-500, HumanEval and MBPP (run in the ``code`` sandbox), the 13
RULER tasks (``ruler``, ``ruler_qa``), the paper's table presets (``paper``), SFT data and
runners, the Hugging Face export (``hf_export``) and the lm-evaluation-harness bridge
(``lm_eval_bridge``).

Submodules are imported on demand (``from iha.eval import gsm8k``) so that optional
dependencies (``datasets``, ``sympy``) are only needed by the code that uses them.
"""
