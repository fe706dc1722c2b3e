"""``DecoderLM``: a Llama-style decoder whose attention per layer follows ``ModelConfig``.

Pre-norm blocks ``h = h + attn(norm(h)); h = h + mlp(norm(h))`` with RMSNorm and SwiGLU, RoPE
inside every attention layer, optional tied input/output embeddings. Module names follow the
Hugging Face Llama layout (``embed_tokens``, ``layers[i].self_attn``, ``layers[i].mlp``,
``input_layernorm``, ``post_attention_layernorm``, ``norm``, ``lm_head``).

Positions are absolute token indices (plus the cache offset). A left-padded row is therefore
shifted by its padding, which changes nothing: RoPE scores depend only on relative distances
(for IHA, virtual distances (n - m) P + (p - p')), windows are distances too, and padded keys are
masked out. So no ``position_ids`` are needed for left-padded batches.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from iha.attention import InterleavedHeadAttention
from iha.cache import CACHE_POLICIES, KVCache
from iha.masks import CONVENTION, check_attention_mask
from iha.models.config import ModelConfig
from iha.models.counts import model_flops
from iha.models.layers import (
    GELUMLP,
    DiffAttention,
    MultiHeadAttention,
    RMSNorm,
    SwiGLU,
    TalkingHeadsAttention,
)
from iha.validate import check_choice, check_int

IHA_KINDS = ("iha_local", "iha_global")


def build_attention(cfg: ModelConfig, kind: str, layer_index: int) -> nn.Module:
    """The attention module of one layer (``layer_index`` is 0-based)."""
    D, H, G = cfg.hidden_size, cfg.num_attention_heads, cfg.n_kv_heads
    window = cfg.layer_window(kind)
    backend = cfg.attention_backend
    scaling = cfg.rope_scaling  # every layer kind applies it at the positions its RoPE sees
    if kind in ("global", "local"):
        return MultiHeadAttention(
            D, H, G, window=window, rope_theta=cfg.rope_theta, backend=backend, rope_scaling=scaling
        )
    if kind == "talking_heads":
        return TalkingHeadsAttention(D, H, G, rope_theta=cfg.rope_theta, rope_scaling=scaling)
    if kind == "diff":
        return DiffAttention(
            D,
            H,
            G,
            rope_theta=cfg.rope_theta,
            layer_index=layer_index + 1,
            eps=cfg.rms_norm_eps,
            backend=backend,
            rope_scaling=scaling,
        )
    if kind in IHA_KINDS:
        return InterleavedHeadAttention(
            D,
            H,
            n_pseudo=cfg.n_pseudo,
            n_kv_heads=G,
            collapse=cfg.iha_collapse,
            mask=cfg.iha_mask,
            window=window,
            rope_theta=cfg.rope_theta,
            rope_scaling=scaling,
            positions=cfg.iha_positions,
            init="default",
            backend=backend,
        )
    raise ValueError(f"unknown layer kind {kind!r}")


class DecoderLayer(nn.Module):
    """One pre-norm block: attention then the MLP (SwiGLU or GELU), each with a residual:
    ``h = h + attn(norm(h)); h = h + mlp(norm(h))``.

    Args:
        cfg (ModelConfig): sizes, RoPE, norms, MLP type and the IHA options.
        kind (str): the layer kind, one of ``iha.models.LAYER_KINDS`` (``"global"``,
            ``"local"``, ``"talking_heads"``, ``"diff"``, ``"iha_local"``, ``"iha_global"``).
        layer_index (int): 0-based depth (the diff layer's lambda_init depends on it).

    Example::

        >>> import torch
        >>> from iha.models import DecoderLayer, get_preset
        >>> block = DecoderLayer(get_preset("tiny", attention_variant="iha"), "iha_local", 0)
        >>> block(torch.randn(2, 5, block.self_attn.d_model)).shape[:2]
        torch.Size([2, 5])
    """

    def __init__(self, cfg: ModelConfig, kind: str, layer_index: int) -> None:
        """See the class docstring for the arguments."""
        super().__init__()
        self.kind = kind
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = build_attention(cfg, kind, layer_index)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        mlp = GELUMLP if cfg.mlp_type == "gelu" else SwiGLU
        self.mlp = mlp(cfg.hidden_size, cfg.ffn_size)

    def forward(
        self,
        h: torch.Tensor,  # (B, N, D)
        attention_mask: torch.Tensor | None = None,  # (B, N) bool, True = real
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """The block on hidden states ``h``.

        Args:
            h (Tensor): (B, N, D) hidden states.
            attention_mask (Tensor, optional): (B, N) padding mask, 1 / True = real token.
            cache (KVCache, optional): this layer's cache (see ``DecoderLM.make_cache``).

        Returns:
            Tensor: (B, N, D).
        """
        a = self.self_attn(self.input_layernorm(h), attention_mask=attention_mask, cache=cache)
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h))


class ModelCache:
    """The KV caches of all layers of a ``DecoderLM`` (one ``iha.KVCache`` per layer).

    IHA layers follow ``policy`` ("raw": unmixed keys/values, 1/P of the memory of "pseudo";
    "pseudo": mixed, rotated pseudo keys/values); MHA-family layers store rotated keys.
    Sliding-window layers keep only their last ``window`` tokens. Made by
    :meth:`DecoderLM.make_cache`.

    Args:
        layers (list[KVCache]): one cache per layer, in order.
        batch_size (int): rows B of the batch it serves.
        policy (str): ``"raw"`` or ``"pseudo"`` (what the IHA layers store).

    Example::

        >>> import torch
        >>> from iha.models import DecoderLM, get_preset
        >>> model = DecoderLM(get_preset("tiny", vocab_size=32)).eval()
        >>> cache = model.make_cache(batch_size=1, policy="raw")
        >>> _ = model(torch.tensor([[1, 2, 3]]), cache=cache)
        >>> _ = model(torch.tensor([[4]]), cache=cache)
        >>> cache.offset, len(cache) == model.config.num_hidden_layers
        (4, True)
    """

    def __init__(self, layers: list[KVCache], batch_size: int, policy: str) -> None:
        """See the class docstring for the arguments."""
        self.layers = layers
        self.batch_size = batch_size
        self.policy = policy

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> KVCache:
        return self.layers[i]

    @property
    def offset(self) -> int:
        """Tokens seen so far (the absolute index of the next token)."""
        return self.layers[0].offset if self.layers else 0

    def nbytes(self) -> int:
        """Bytes held by all cached keys and values."""
        return sum(c.nbytes() for c in self.layers)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep/reorder batch rows (beam search, dropping finished rows)."""
        for c in self.layers:
            c.reorder(index)
        self.batch_size = int(index.numel())


class DecoderLM(nn.Module):
    """Decoder-only LM. ``forward(input_ids (B, N), attention_mask=None, cache=None) -> (B, N, V)``.

    Llama layout (``embed_tokens``, ``layers[i].self_attn`` / ``mlp``, ``norm``, ``lm_head``);
    the attention of each layer follows ``config`` (``attention_variant`` or
    ``layer_schedule``).

    Args:
        config (ModelConfig): the model (see :class:`ModelConfig`).

    ``gradient_checkpointing = True`` (or :meth:`gradient_checkpointing_enable`) recomputes each
    layer's activations in the backward pass instead of storing them (training without a cache
    only): the same gradients for about one more forward pass of compute.

    Example::

        >>> import torch
        >>> from iha.models import DecoderLM, get_preset
        >>> model = DecoderLM(get_preset("tiny", attention_variant="iha", vocab_size=32))
        >>> ids = torch.randint(0, 32, (2, 8))
        >>> model(ids).shape
        torch.Size([2, 8, 32])
    """

    def __init__(self, config: ModelConfig) -> None:
        """See the class docstring for the arguments."""
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(
                f"config must be an iha.models.ModelConfig, got {type(config).__name__}"
            )
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, kind, i) for i, kind in enumerate(config.layer_kinds())
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self.init_module)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.gradient_checkpointing = False

    def gradient_checkpointing_enable(self, enable: bool = True) -> None:
        """Recompute layer activations in backward instead of storing them (see the class)."""
        self.gradient_checkpointing = bool(enable)

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_module(self, module: nn.Module) -> None:
        """Initialise one module: linears and embeddings ~ N(0, initializer_range^2), norms at 1,
        attention mixing parameters by their layer's own init (IHA: near-identity alphas and
        collapse; talking heads: identity; diff: lambda vectors ~ N(0, 0.1^2))."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, (InterleavedHeadAttention, TalkingHeadsAttention, DiffAttention)):
            module.reset_mixing()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: ModelCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits of every position.

        Args:
            input_ids (Tensor, optional): (B, N) int64 token ids below ``vocab_size``.
            attention_mask (Tensor, optional): Hugging Face's padding mask, 1 / ``True`` =
                real token, 0 / ``False`` = padding (left padding for batched generation);
                bool or 0/1 integers (floats and other values raise ``ValueError``); (B, N) or
                (B, offset + N). Padded tokens are never attended to. Default: ``None``.
            cache (ModelCache, optional): from :meth:`make_cache`; the call then processes the
                next N tokens after those already in the cache and appends them.
            inputs_embeds (Tensor, optional): (B, N, D) embeddings instead of ``input_ids``
                (pass exactly one of the two).

        Returns:
            Tensor: (B, N, vocab_size) logits.
        """
        h = self.hidden_states(input_ids, attention_mask, cache, inputs_embeds)
        return self.lm_head(h)

    def hidden_states(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: ModelCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        all_hidden_states: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The final-norm hidden states (B, N, D) (``forward`` without the LM head).

        With ``all_hidden_states`` (a list), appends the embeddings and each layer's output,
        the last one after the final norm (``num_hidden_layers + 1`` tensors (B, N, D), the
        ``transformers`` convention).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, N) and inputs_embeds (B, N, D)")
        if input_ids is not None:
            if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
                raise ValueError(
                    f"input_ids must be a (B, N) integer tensor, got {input_ids.dtype} "
                    f"{tuple(input_ids.shape)}"
                )
            self._check_ids(input_ids)
            h = self.embed_tokens(input_ids)  # (B, N, D)
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must be (B, N, {self.config.hidden_size}), got "
                    f"{tuple(inputs_embeds.shape)}"
                )
            h = inputs_embeds
        B, N = h.shape[:2]
        if N == 0:
            raise ValueError("the input holds no tokens (N = 0)")
        if cache is not None:
            if not isinstance(cache, ModelCache) or len(cache) != len(self.layers):
                raise ValueError("cache must be a ModelCache made by this model's make_cache()")
        kpm = self._padding(attention_mask, B, N, cache)
        recompute = (
            self.gradient_checkpointing and self.training and torch.is_grad_enabled()
            and cache is None
        )  # fmt: skip
        for i, layer in enumerate(self.layers):
            if all_hidden_states is not None:
                all_hidden_states.append(h)
            if recompute:  # dropout masks are replayed: the RNG state is saved and restored
                h = torch.utils.checkpoint.checkpoint(layer, h, kpm, None, use_reentrant=False)
            else:
                h = layer(h, attention_mask=kpm, cache=None if cache is None else cache.layers[i])
        h = self.norm(h)
        if all_hidden_states is not None:
            all_hidden_states.append(h)
        return h

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        """ValueError when an id is outside [0, vocab_size) (skipped while compiling)."""
        if input_ids.numel() == 0 or torch.compiler.is_compiling():
            return
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"input_ids holds token id {bad}, outside the model's vocabulary "
                f"[0, {self.config.vocab_size})"
            )

    @staticmethod
    def _padding(
        attention_mask: torch.Tensor | None, B: int, N: int, cache: ModelCache | None
    ) -> torch.Tensor | None:
        """(B, N) bool key-padding mask of the new tokens, or None when nothing is padded."""
        attention_mask = check_attention_mask(attention_mask)
        if attention_mask is None:
            return None
        offset = 0 if cache is None else cache.offset
        if (
            attention_mask.dim() != 2
            or attention_mask.shape[0] != B
            or (attention_mask.shape[1] not in (N, offset + N))
        ):
            raise ValueError(
                f"attention_mask must be (B, N) = ({B}, {N}) or (B, offset + N) = "
                f"({B}, {offset + N}), {CONVENTION}; got {tuple(attention_mask.shape)}"
            )
        kpm = attention_mask[:, -N:]
        # No padding among the new tokens: None keeps the is_causal fast path (a cache still
        # remembers the padding of earlier tokens).
        return None if bool(kpm.all()) else kpm

    # ------------------------------------------------------------------ cache
    def make_cache(self, batch_size: int, policy: str = "raw") -> ModelCache:
        """Empty per-layer caches for incremental decoding (see :class:`ModelCache`)."""
        check_choice("policy", policy, CACHE_POLICIES)
        check_int("batch_size", batch_size)
        return ModelCache(
            [layer.self_attn.make_cache(policy) for layer in self.layers], batch_size, policy
        )

    # ------------------------------------------------------------------ counting
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters (a tied embedding counted once); optionally without the input embedding
        (and without the output head when it is not tied)."""
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        if exclude_embeddings:
            total -= self.embed_tokens.weight.numel()
            if not self.config.tie_word_embeddings:
                total -= self.lm_head.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Forward FLOPs per token at ``seq_len`` (default: max_position_embeddings).

        Training is about 3x. See :func:`iha.models.counts.model_flops` for the breakdown.
        """
        n = self.config.max_position_embeddings if seq_len is None else seq_len
        return model_flops(self.config, n)["total"] / n

    def num_mixing_parameters(self) -> int:
        """Attention mixing parameters (IHA alphas/collapse, talking-heads maps, diff lambdas):
        the ones ``iha.param_groups`` puts in its "mixing" group."""
        from iha.optim import is_mixing_parameter

        return sum(p.numel() for n, p in self.named_parameters() if is_mixing_parameter(n, p))
