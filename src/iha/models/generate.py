"""Autoregressive generation for ``DecoderLM``: greedy or sampled, KV cache, left padding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from iha.cache import CACHE_POLICIES
from iha.masks import check_attention_mask
from iha.models.model import DecoderLM
from iha.validate import check_choice, check_int, check_number


def _unwrap(model: nn.Module) -> DecoderLM:
    """The ``DecoderLM`` inside ``model`` (itself, or the ``.model`` of the HF wrapper)."""
    if isinstance(model, DecoderLM):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, DecoderLM):
        return inner
    raise ValueError(f"model must be an iha DecoderLM (or wrap one), got {type(model).__name__}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass ``top_p``.

    logits: (B, V). The most likely token always survives. ``top_k=0`` and ``top_p=1`` disable.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V): argmax when ``temperature == 0``.

    Args:
        logits (Tensor): (B, V) next-token logits.
        temperature (float): 0 (default) = greedy; otherwise sample from
            softmax(logits / temperature).
        top_p (float): nucleus mass in (0, 1]; 1 (default) = all tokens.
        top_k (int): keep the k most likely tokens; 0 (default) = all.
        generator (torch.Generator, optional): the random source of sampling.

    Returns:
        Tensor: (B,) int64 token ids.

    Example::

        >>> import torch
        >>> from iha.models import sample_next
        >>> sample_next(torch.tensor([[0.1, 2.0, -1.0]])).tolist()
        [1]
    """
    logits = logits.float()
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def find_stop(text: str, stop_strings: Sequence[str]) -> int:
    """Index in ``text`` where the earliest of ``stop_strings`` starts, -1 when none occurs."""
    found = [i for i in (text.find(s) for s in stop_strings) if i != -1]
    return min(found) if found else -1


class StopStringTracker:
    """Which rows of a batch have produced one of ``stop_strings`` in their new tokens.

    ``update(rows, tokens)`` appends each listed row's new token and decodes the row's new tokens
    with ``decode`` (a tokenizer's ``decode(ids) -> str``): a stop string split across several
    tokens is found as soon as its last piece is generated. Only the tail that can contain a
    stop string not seen before is searched.
    """

    def __init__(
        self, batch_size: int, stop_strings: Sequence[str], decode: Callable[[list[int]], str]
    ) -> None:
        strings = list(stop_strings)
        if not strings or any(not isinstance(s, str) or not s for s in strings):
            raise ValueError(f"stop_strings must be non-empty strings, got {stop_strings!r}")
        self.stop_strings, self.decode = strings, decode
        self.longest = max(len(s) for s in strings)
        self.ids: list[list[int]] = [[] for _ in range(batch_size)]
        self.seen = [0] * batch_size  # characters of each row's text already searched

    def update(self, rows: Sequence[int], tokens: Sequence[int]) -> list[int]:
        """Add ``tokens[i]`` to row ``rows[i]``; the rows whose text now holds a stop string."""
        hit = []
        for r, t in zip(rows, tokens):
            self.ids[r].append(int(t))
            text = self.decode(self.ids[r])
            start = max(0, self.seen[r] - self.longest + 1)
            if find_stop(text[start:], self.stop_strings) != -1:
                hit.append(r)
            # the last characters may still change (an incomplete UTF-8 sequence): search the
            # tail again next time
            self.seen[r] = max(0, len(text) - 4)
        return hit


def _stop_string_tracker(
    batch_size: int, stop_strings: Sequence[str] | None, tokenizer: Any, pad_token_id: int | None
) -> tuple[StopStringTracker | None, int]:
    """The tracker of ``stop_strings`` (None when there are none) and the id that fills rows
    finished by one."""
    if not stop_strings:
        return None, 0
    if isinstance(stop_strings, str):
        raise ValueError(f"stop_strings must be a list of strings, got the string {stop_strings!r}")
    if tokenizer is None or not callable(getattr(tokenizer, "decode", None)):
        raise ValueError("stop_strings needs tokenizer= (an object with decode(ids) -> str)")
    pad = pad_token_id
    if pad is None:
        pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is None:
        raise ValueError("stop_strings needs pad_token_id= (the tokenizer has no pad or eos id)")
    check_int("pad_token_id", int(pad), 0)
    return StopStringTracker(batch_size, stop_strings, tokenizer.decode), int(pad)


def _check_args(max_new_tokens, temperature, top_p, top_k, cache_policy) -> None:
    check_int("max_new_tokens", max_new_tokens, 0)
    check_number("temperature", temperature, 0)  # 0 = greedy
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} must be in (0, 1]")
    check_int("top_k", top_k, 0)  # 0 = off
    check_choice("cache_policy", cache_policy, CACHE_POLICIES)


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_token_ids: Sequence[int] | None = None,
    seed: int | None = None,
    *,
    use_cache: bool = True,
    cache_policy: str = "pseudo",
    return_logits: bool = False,
    stop_strings: Sequence[str] | None = None,
    tokenizer: Any = None,
    pad_token_id: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Generate up to ``max_new_tokens`` tokens after each prompt.

    Args:
        model: a ``DecoderLM`` (or the HF ``IHAForCausalLM`` wrapping one).
        input_ids: (B, N) prompts, left-padded when their lengths differ.
        attention_mask: (B, N), 1 / True = real token, 0 / False = padding (bool or 0/1
            integers); None = no padding.
        max_new_tokens: the most tokens to generate per row (default 16).
        top_p: nucleus mass in (0, 1] (default 1: off).
        top_k: keep the k most likely tokens; 0 (default) = off.
        temperature: 0 = greedy (argmax); otherwise sample from softmax(logits / temperature)
            restricted to the ``top_k`` most likely tokens (0 = all) and the nucleus of mass
            ``top_p`` (1 = all).
        stop_token_ids: a row that emits one of these tokens is finished: the stop token is
            kept and the rest of the row repeats it. Generation ends when every row finished.
        seed: seeds a private ``torch.Generator`` for sampling (None: the global RNG).
        use_cache: decode with a KV cache (``model.make_cache(B, cache_policy)``); False runs
            the whole sequence at every step (the reference the cache is tested against).
        cache_policy: "pseudo" (default: mixed, rotated pseudo keys are cached, a step mixes only
            its new token) or "raw" (1/P of the cache memory, but the whole cache is re-mixed
            at every step: several times slower at long contexts) for IHA layers; same outputs.
        return_logits: also return the logits (B, new, V) each token was chosen from (zeros
            after a row finished).
        stop_strings: a row whose new text (``tokenizer.decode`` of its new tokens) contains one
            of these strings is finished, even when the string is split across tokens: the
            token that completed it is kept and the rest of the row is ``pad_token_id``.
            Generation ends when every row finished (by a stop token or a stop string). The
            text is not cut: cut it at the first stop string afterwards (the result equals
            full-length generation cut there).
        tokenizer: decodes the new tokens for ``stop_strings`` (anything with
            ``decode(ids) -> str``).
        pad_token_id: fills rows finished by a stop string (default: ``tokenizer.pad_token_id``,
            else its ``eos_token_id``).

    Returns:
        (B, new) int64 new tokens only, new <= max_new_tokens (fewer when every row stopped);
        with ``return_logits``, the pair (tokens, logits).

    A finished row leaves the batch (its cache rows are dropped, :func:`decode_loop`): the steps
    after it cost what the rows still generating cost.

    Example::

        >>> import torch
        >>> from iha.models import DecoderLM, generate, get_preset
        >>> model = DecoderLM(get_preset("tiny", vocab_size=32)).eval()
        >>> ids = torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]])
        >>> mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])  # row 0 is left-padded
        >>> generate(model, ids, mask, max_new_tokens=3).shape
        torch.Size([2, 3])
    """
    lm = _unwrap(model)
    _check_args(max_new_tokens, temperature, top_p, top_k, cache_policy)
    mask, tracker, pad, generator = prepare_batch(
        input_ids, attention_mask, temperature, seed, stop_strings, tokenizer, pad_token_id
    )
    B, device = input_ids.shape[0], input_ids.device
    if max_new_tokens == 0:
        empty = torch.empty(B, 0, dtype=torch.long, device=device)
        return (
            (empty, torch.empty(B, 0, lm.config.vocab_size, device=device))
            if (return_logits)
            else empty
        )
    cache = lm.make_cache(B, cache_policy) if use_cache else None
    state = {"seq": input_ids, "mask": mask}

    def step(nxt: torch.Tensor) -> torch.Tensor:  # the live rows' next logits
        b = nxt.shape[0]
        state["mask"] = torch.cat(
            [state["mask"], torch.ones(b, 1, dtype=torch.bool, device=device)], dim=1
        )
        if cache is not None:
            return lm(nxt[:, None], attention_mask=state["mask"], cache=cache)[:, -1]
        state["seq"] = torch.cat([state["seq"], nxt[:, None]], dim=1)
        return lm(state["seq"], attention_mask=state["mask"])[:, -1]

    def keep_rows(index: torch.Tensor) -> None:  # drop the finished rows
        state["seq"], state["mask"] = state["seq"][index], state["mask"][index]
        if cache is not None:
            cache.reorder(index)

    first = lm(input_ids, attention_mask=mask, cache=cache)[:, -1]  # (B, V)
    return decode_loop(
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
        return_logits=return_logits,
    )


def prepare_batch(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    temperature: float,
    seed: int | None,
    stop_strings: Sequence[str] | None,
    tokenizer: Any,
    pad_token_id: int | None,
) -> tuple[torch.Tensor, StopStringTracker | None, int, torch.Generator | None]:
    """The checked pieces of a generation call: the (B, N) bool attention mask (all ones when
    None), the stop-string tracker and the id filling rows it finishes, and the seeded random
    generator of sampling (None when greedy or unseeded)."""
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (B, N) with N >= 1, got {tuple(input_ids.shape)}")
    device = input_ids.device
    mask = (
        torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is None
        else check_attention_mask(attention_mask).to(device=device)
    )
    if mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
            f"{tuple(mask.shape)}"
        )
    tracker, pad = _stop_string_tracker(input_ids.shape[0], stop_strings, tokenizer, pad_token_id)
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    return mask, tracker, pad, generator


def decode_loop(
    first_logits: torch.Tensor,
    step: Callable[[torch.Tensor], torch.Tensor],
    keep_rows: Callable[[torch.Tensor], None],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_token_ids: Sequence[int] | None = None,
    tracker: StopStringTracker | None = None,
    pad: int = 0,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The decoding loop behind :func:`generate` (and ``iha.eval``'s decoding of Hugging Face
    models): the batch shrinks as its rows finish.

    A step runs only the rows still generating: when rows finish (a stop token, or a stop
    string found by ``tracker``), ``keep_rows(index)`` is called with the positions, among the
    rows of the previous step, of those that go on, and must keep just those rows of the model's
    state (KV cache, attention mask); ``step(tokens)`` then gets the new token of each kept row
    (b,) and returns their next logits (b, V). A batch therefore costs what its live rows cost,
    not what its longest row costs times its size.

    Args:
        first_logits: (B, V) logits of each row's first new token (the prefill's last position).
        step, keep_rows: the model, as above.
        max_new_tokens: at least 1.
        temperature, top_p, top_k, generator: sampling as in :func:`sample_next`; a row's
            tokens do not depend on when the other rows finish (the draws of all B rows are
            taken at every step).
        stop_token_ids: a row that emits one is finished; the token is kept and repeated.
        tracker: the rows' stop strings (:class:`StopStringTracker` over the B rows); a row
            finished by one is filled with ``pad`` after the token that completed it.
        return_logits: also return the logits each token was chosen from (B, new, V); a row's
            logits after it finished are zeros.

    Returns:
        (B, new) int64 new tokens, new <= max_new_tokens (fewer when every row finished), and
        with ``return_logits`` the pair (tokens, logits).
    """
    check_int("max_new_tokens", max_new_tokens, 1)
    B = first_logits.shape[0]
    device = first_logits.device
    stops = torch.tensor(list(stop_token_ids or []), dtype=torch.long, device=device)
    out = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    all_logits = (
        first_logits.new_zeros(B, max_new_tokens, first_logits.shape[-1]) if return_logits else None
    )
    live = torch.arange(B, device=device)  # original row of each live row
    logits = first_logits
    # sampling draws for all B rows (finished rows keep their last logits, their draws are
    # dropped): the random stream, and so every row's tokens, do not depend on when other
    # rows finished
    every = first_logits.clone() if temperature > 0 else None
    new = 0
    for t in range(max_new_tokens):
        if every is None:
            nxt = sample_next(logits, temperature, top_p, top_k, generator)  # (b,)
        else:
            every[live] = logits
            nxt = sample_next(every, temperature, top_p, top_k, generator)[live]
        out[live, t] = nxt
        if all_logits is not None:
            all_logits[live, t] = logits.to(all_logits.dtype)
        new = t + 1
        done = torch.isin(nxt, stops) if stops.numel() else torch.zeros_like(nxt, dtype=torch.bool)
        for r in done.nonzero().flatten().tolist():  # the stop token repeats to the end
            out[live[r], t + 1 :] = nxt[r]
        if tracker is not None:
            going = (~done).nonzero().flatten()
            rows = live[going].tolist()
            hit = set(tracker.update(rows, nxt[going].tolist())) if rows else set()
            if hit:
                for i, r in zip(going.tolist(), rows):
                    if r in hit:
                        done[i] = True
                        out[r, t + 1 :] = pad
        if t == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().flatten()
            keep_rows(keep)
            live, nxt = live[keep], nxt[keep]
        logits = step(nxt)
    tokens = out[:, :new]
    if all_logits is not None:
        return tokens, all_logits[:, :new]
    return tokens
