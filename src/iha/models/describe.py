"""Parameters and FLOPs per token of a config, for every attention variant side by side.

FLOPs come from ``iha.models.counts`` (built on ``iha.flops``, the one FLOP counter); parameters
are counted on the built model.
"""

from __future__ import annotations

from typing import Any

import torch

from iha.models.config import LETTER_OF_KIND, VARIANTS, ModelConfig
from iha.models.counts import model_flops
from iha.models.model import DecoderLM

__all__ = ["count_parameters", "describe", "markdown_table", "model_flops"]


def count_parameters(cfg: ModelConfig) -> dict[str, int]:
    """``params``, ``non_embedding`` and ``mixing`` parameters, counted on the built model (on
    the meta device, nothing allocated, when it is large).

    Args:
        cfg (ModelConfig): the model.

    Returns:
        dict[str, int]: ``params`` (tied embeddings counted once), ``non_embedding`` and
        ``mixing`` (IHA alphas and collapse, talking-heads maps, diff lambdas).

    Example::

        >>> from iha.models import count_parameters, get_preset
        >>> counts = count_parameters(get_preset("tiny", attention_variant="iha"))
        >>> sorted(counts), counts["mixing"] > 0
        (['mixing', 'non_embedding', 'params'], True)
    """
    D, F = cfg.hidden_size, cfg.ffn_size
    rough = 2 * cfg.vocab_size * D + cfg.num_hidden_layers * (4 * D * D + 3 * D * F)
    device = "meta" if rough > 10_000_000 else "cpu"
    with torch.device(device):
        model = DecoderLM(cfg)
    return {
        "params": model.num_parameters(),
        "non_embedding": model.num_parameters(exclude_embeddings=True),
        "mixing": model.num_mixing_parameters(),
    }


def describe(
    cfg: ModelConfig, seq_len: int | None = None, as_markdown: bool = False
) -> list[dict[str, Any]] | str:
    """Parameters and forward FLOPs per token of every attention variant of ``cfg``.

    One row per variant (``cfg`` with ``attention_variant`` set and ``layer_schedule`` cleared),
    plus a first row for ``cfg`` itself when it has an explicit ``layer_schedule``. A variant the
    config cannot express (``diff`` needs even head counts) is left out. Ratios are against the
    ``global`` variant. ``as_markdown=True`` returns a markdown table instead.

    Args:
        cfg (ModelConfig): the model whose sizes every row shares.
        seq_len (int, optional): tokens the FLOPs are counted over. Default: ``None``
            (``cfg.max_position_embeddings``).
        as_markdown (bool): return a markdown table instead of rows. Default: ``False``.

    Returns:
        list[dict] or str: one dict per variant (``variant``, ``schedule``, ``windows``,
        ``params``, ``mixing_params``, FLOPs per token and ratios to ``global``), or the table.

    Example::

        >>> from iha.models import describe, get_preset
        >>> rows = describe(get_preset("tiny"))
        >>> [r["variant"] for r in rows][:3], rows[0]["attn_vs_global"]
        (['global', 'global_local', 'talking_heads'], 1.0)
    """
    N = cfg.max_position_embeddings if seq_len is None else seq_len
    configs: list[tuple[str, ModelConfig]] = []
    if cfg.layer_schedule is not None:
        configs.append(("custom", cfg))
    for v in VARIANTS:
        try:
            configs.append((v, cfg.replace(attention_variant=v, layer_schedule=None)))
        except ValueError:
            continue
    rows: list[dict[str, Any]] = []
    base = model_flops(cfg.replace(attention_variant="global", layer_schedule=None), N)
    for name, c in configs:
        f = model_flops(c, N)
        p = count_parameters(c)
        windows = sorted({c.layer_window(k) for k in c.layer_kinds()} - {None})
        rows.append(
            {
                "variant": name,
                "schedule": "".join(LETTER_OF_KIND[k] for k in c.layer_kinds()),
                "windows": ",".join(map(str, windows)) or "-",
                "params": p["params"],
                "mixing_params": p["mixing"],
                "attn_flops_per_token": f["attention"] / N,
                "attn_layer_flops_per_token": f["attention_layers"] / N,
                "total_flops_per_token": f["total"] / N,
                "attn_vs_global": f["attention"] / base["attention"],
                "paper_attn_vs_global": f["paper_attention"] / base["paper_attention"],
                "total_vs_global": f["total"] / base["total"],
            }
        )
    return markdown_table(rows) if as_markdown else rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts with the same keys as a markdown table (floats to 4 significant digits).

    Args:
        rows (list[dict]): the rows; the first row's keys are the columns.

    Returns:
        str: the table ('' for no rows).

    Example::

        >>> from iha.models import markdown_table
        >>> print(markdown_table([{"variant": "iha", "ratio": 0.61234}]))
        | variant | ratio |
        |---|---|
        | iha | 0.6123 |
    """
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.4e}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
