"""Batched decoding of a Hugging Face causal LM in which finished rows leave the batch.

``model.generate`` keeps every row of a batch to the end: a row that stopped is fed padding at
every later step, so a batch costs its size times its longest answer. :func:`generate_hf` runs
the same left-padded prefill and KV-cache decoding as ``model.generate`` (positions from the
attention mask, one token per step), but drops a row from the KV cache and the attention mask
as soon as it emits a stop token or its text holds a stop string
(:func:`iha.models.generate.decode_loop`, the loop behind ``iha.models.generate``). Greedy
outputs are those of ``model.generate(do_sample=False)``; sampled outputs follow
:func:`iha.models.sample_next` (temperature, then top-k, then the nucleus of mass top-p), with
its own seeded random stream rather than ``transformers``'.

Any ``transformers`` causal LM with a ``Cache`` works: the original models, the models of
``iha.hf.convert`` and :class:`iha.hf.IHAForCausalLM` (its own ``make_cache``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from iha.models.generate import _check_args, decode_loop, prepare_batch


def _forward_names(model: Any) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _new_cache(model: Any, batch_size: int) -> Any:
    make = getattr(model, "make_cache", None)
    if callable(make):
        return make(batch_size)
    from transformers.cache_utils import DynamicCache

    return DynamicCache(config=model.config)


@torch.no_grad()
def generate_hf(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_token_ids: Sequence[int] | None = None,
    seed: int | None = None,
    *,
    stop_strings: Sequence[str] | None = None,
    tokenizer: Any = None,
    pad_token_id: int | None = None,
) -> torch.Tensor:
    """Generate up to ``max_new_tokens`` tokens after each prompt with a ``transformers`` model.

    The arguments and the result are those of :func:`iha.models.generate` (greedy when
    ``temperature == 0``; a row that emits one of ``stop_token_ids`` repeats it to the end, a
    row finished by one of ``stop_strings`` is filled with ``pad_token_id``; the batch ends when
    every row finished). Rows leave the batch when they finish, so later steps cost what the
    rows still generating cost.

    Args:
        model: a ``transformers`` causal LM (``forward(input_ids, attention_mask, position_ids,
            cache / past_key_values, use_cache, logits_to_keep)``); evaluation mode is the
            caller's.
        input_ids: (B, N) prompts, left-padded.
        attention_mask: (B, N), 1 = real token; None = no padding.

    Returns:
        (B, new) int64 new tokens, new <= max_new_tokens.

    Example::

        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16,
        ...     intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)).eval()
        >>> ids = torch.tensor([[0, 5, 6], [7, 8, 9]])
        >>> mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
        >>> new = generate_hf(model, ids, mask, max_new_tokens=4)
        >>> ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4,
        ...     do_sample=False, pad_token_id=0)[:, 3:]
        >>> torch.equal(new, ref)
        True
    """
    _check_args(max_new_tokens, temperature, top_p, top_k, "pseudo")
    bool_mask, tracker, pad, generator = prepare_batch(
        input_ids, attention_mask, temperature, seed, stop_strings, tokenizer, pad_token_id
    )
    if max_new_tokens == 0:
        return torch.empty(input_ids.shape[0], 0, dtype=torch.long, device=input_ids.device)
    device = input_ids.device
    mask = bool_mask.long()

    names = _forward_names(model)
    cache_name = "cache" if "cache" in names else "past_key_values"
    cache = _new_cache(model, input_ids.shape[0])
    state = {"mask": mask}
    # positions as model.generate counts them: real tokens from 0, padding at 1 (masked out)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    state["next"] = positions[:, -1:] + 1  # (b, 1)

    def forward(ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {cache_name: cache, "use_cache": True}
        if "position_ids" in names:
            kwargs["position_ids"] = pos
        if "logits_to_keep" in names:
            kwargs["logits_to_keep"] = 1
        out = model(input_ids=ids, attention_mask=state["mask"], **kwargs)
        return out.logits[:, -1].float()

    def step(nxt: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(nxt.shape[0], 1, dtype=state["mask"].dtype, device=device)
        state["mask"] = torch.cat([state["mask"], ones], dim=1)
        logits = forward(nxt[:, None], state["next"])
        state["next"] = state["next"] + 1
        return logits

    def keep_rows(index: torch.Tensor) -> None:
        state["mask"], state["next"] = state["mask"][index], state["next"][index]
        cache.batch_select_indices(index)

    first = forward(input_ids, positions)
    out = decode_loop(
        first,
        step,
        keep_rows,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stop_token_ids=stop_token_ids,
        tracker=tracker,
        pad=pad,
        generator=generator,
    )
    assert isinstance(out, torch.Tensor)
    return out
