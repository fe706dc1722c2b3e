"""Evaluation: metrics, GSM8K, MATH-500, RULER multi-key retrieval, SFT data and runners, the
Hugging Face export (``hf_export``) and the lm-evaluation-harness bridge (``lm_eval_bridge``).

Submodules are imported on demand (``from iha.eval import gsm8k``) so that optional
dependencies (``datasets``, ``sympy``) are only needed by the code that uses them.
"""
