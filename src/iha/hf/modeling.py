"""``IHAForCausalLM``: the ``transformers`` face of :class:`iha.models.DecoderLM`.

The HF class holds the very same network (``self.model`` is a ``DecoderLM``; parameter names are
``model.<DecoderLM names>``), so ``iha.models.generate`` and the HF ``generate()`` run the same
weights. ``past_key_values`` / ``cache`` is an :class:`IHACache`, a ``transformers.Cache`` whose
layers are the ``iha.KVCache`` objects of a :class:`iha.models.ModelCache` (IHA layers follow
``config.cache_policy``; sliding-window layers keep only their window).

Positions come from the cache offset; ``position_ids`` are accepted and ignored (RoPE scores
depend on relative distances only, so left padding needs no position shift; see
``iha.models.model``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from iha.hf.configuration import IHAConfig
from iha.models.model import DecoderLM, ModelCache

# transformers 5 renamed the output field past_key_values -> cache
_CACHE_FIELD = (
    "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else ("past_key_values")
)


class IHACacheLayer(CacheLayerMixin):
    """A ``transformers`` cache layer that is a view of layer ``index`` of a ``ModelCache``.

    The model appends to it itself (``update`` is not used); generation utilities may query
    its length and reorder or select batch rows.

    Args:
        model_cache (ModelCache): the caches of all layers of the ``DecoderLM``.
        index (int): the layer this view shows.

    Example::

        >>> import iha.hf
        >>> model = iha.hf.IHAForCausalLM(iha.hf.IHAConfig(hidden_size=32, vocab_size=32))
        >>> layer = model.make_cache(batch_size=1).layers[0]
        >>> isinstance(layer, iha.hf.IHACacheLayer), layer.get_seq_length()
        (True, 0)
    """

    is_compileable = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, model_cache: ModelCache, index: int) -> None:
        """See the class docstring for the arguments."""
        super().__init__()
        self.model_cache, self.index = model_cache, index
        self.is_sliding = self.kv.max_tokens is not None

    @property
    def kv(self):
        return self.model_cache.layers[self.index]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(self, key_states, value_states, *args, **kwargs):
        raise NotImplementedError("IHA layers append to their cache inside DecoderLM.forward")

    def get_seq_length(self) -> int:
        return self.kv.offset

    def get_max_length(self) -> int:
        return -1 if self.kv.max_tokens is None else self.kv.max_tokens

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.kv.n_tokens + query_length, self.kv.offset - self.kv.n_tokens

    def reset(self) -> None:
        old = self.kv
        self.model_cache.layers[self.index] = type(old)(old.policy, old.max_tokens)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.kv.reorder(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.kv.reorder(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        kv = self.kv
        if kv.keys is not None:
            n = kv.keys.shape[0]
            kv.reorder(torch.arange(n, device=kv.keys.device).repeat_interleave(repeats))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("IHACache cannot be cropped (assisted decoding is unsupported)")


class IHACache(Cache):
    """``past_key_values`` of :class:`IHAForCausalLM`: wraps an ``iha.models.ModelCache``.

    Args:
        model_cache (ModelCache): from ``DecoderLM.make_cache``; its layer caches become the
            cache layers (:class:`IHACacheLayer`).

    Example::

        >>> import torch, iha.hf
        >>> model = iha.hf.IHAForCausalLM(iha.hf.IHAConfig(hidden_size=32, vocab_size=32)).eval()
        >>> out = model(torch.tensor([[1, 2, 3]]), use_cache=True)
        >>> type(out.past_key_values).__name__, out.past_key_values.get_seq_length()
        ('IHACache', 3)
    """

    def __init__(self, model_cache: ModelCache) -> None:
        """See the class docstring for the arguments."""
        super().__init__(layers=[IHACacheLayer(model_cache, i) for i in range(len(model_cache))])
        self.model_cache = model_cache

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values of all layers."""
        return self.model_cache.nbytes()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.model_cache.reorder(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep batch rows ``indices`` of every layer (dropping finished rows)."""
        self.model_cache.reorder(indices)


class IHAPreTrainedModel(PreTrainedModel):
    """The ``transformers`` base class of the IHA models: config class :class:`IHAConfig`,
    weight init of :class:`iha.models.DecoderLM`, gradient checkpointing support.

    Example::

        >>> import iha.hf
        >>> issubclass(iha.hf.IHAForCausalLM, iha.hf.IHAPreTrainedModel)
        True
    """

    config_class = IHAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DecoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        """The ``DecoderLM`` init (N(0, initializer_range) linears/embeddings, layer-owned
        mixing inits), so HF-created and ``iha``-created models start alike."""
        model = getattr(self, "model", None)
        if isinstance(model, DecoderLM):
            model.init_module(module)


class IHAForCausalLM(IHAPreTrainedModel, GenerationMixin):
    """Causal LM over :class:`iha.models.DecoderLM` with the ``transformers`` interface.

    ``forward(input_ids, attention_mask=None, past_key_values/cache=None, labels=None,
    use_cache=None, inputs_embeds=None, logits_to_keep=0, output_hidden_states=None)``;
    ``labels`` gives the mean shifted cross-entropy over labels != -100;
    ``output_hidden_states=True`` returns the embeddings and every layer's output
    (``num_hidden_layers + 1`` tensors, the last after the final norm). Attention weights are
    never materialised (IHA attends over P * N pseudo-tokens in fused kernels), so
    ``output_attentions=True`` raises a ``ValueError``.

    :meth:`gradient_checkpointing_enable` recomputes layer activations in the backward pass.

    Args:
        config (IHAConfig): the model; ``self.model`` is the ``DecoderLM`` of
            ``config.to_model_config()``.

    Example::

        >>> import torch, iha.hf
        >>> cfg = iha.hf.IHAConfig(attention_variant="iha", hidden_size=32, vocab_size=32)
        >>> model = iha.hf.IHAForCausalLM(cfg).eval()
        >>> ids = torch.tensor([[0, 5, 6, 7], [1, 2, 3, 4]])
        >>> mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # 1 = real token (HF convention)
        >>> model(ids, attention_mask=mask).logits.shape
        torch.Size([2, 4, 32])
        >>> model.generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=False).shape
        torch.Size([2, 6])
    """

    _tied_weights_keys = {"model.lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: IHAConfig) -> None:
        """See the class docstring for the arguments."""
        super().__init__(config)
        self.model = DecoderLM(config.to_model_config())
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model makes its own IHACache on the first forward

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.model.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.model.lm_head = value

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Any = None) -> None:
        """Recompute each layer's activations in backward (``torch.utils.checkpoint``,
        non-reentrant; ``gradient_checkpointing_kwargs`` is accepted and ignored)."""
        self.model.gradient_checkpointing_enable(True)

    def gradient_checkpointing_disable(self) -> None:
        self.model.gradient_checkpointing_enable(False)

    def make_cache(self, batch_size: int, policy: str | None = None) -> IHACache:
        """An empty :class:`IHACache` (``policy`` defaults to ``config.cache_policy``)."""
        policy = self.config.cache_policy if policy is None else policy
        return IHACache(self.model.make_cache(batch_size, policy))

    def _resolve_cache(self, cache: Any, batch_size: int, use_cache: bool) -> IHACache | None:
        if cache is None:
            return self.make_cache(batch_size) if use_cache else None
        if isinstance(cache, IHACache):
            return cache
        if isinstance(cache, Cache) and cache.get_seq_length() == 0:
            return self.make_cache(batch_size)  # an empty generic cache: use ours instead
        raise ValueError(
            f"past_key_values must be an IHACache (from model.make_cache or a previous output), "
            f"got {type(cache).__name__}"
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: IHACache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: IHACache | None = None,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits (and loss, cache, hidden states) in the ``transformers`` output type.

        Args:
            input_ids (LongTensor, optional): (B, N) token ids.
            attention_mask (Tensor, optional): Hugging Face's (B, N) or (B, past + N) padding
                mask: 1 / ``True`` = real token, 0 / ``False`` = padding; bool or 0/1
                integers (float masks raise ``ValueError``). Default: ``None``.
            position_ids (LongTensor, optional): accepted for ``generate()`` and ignored:
                positions are the token indices (relative distances are all RoPE sees).
            cache (IHACache, optional): the cache (the ``transformers`` 5 name).
            inputs_embeds (Tensor, optional): (B, N, D) instead of ``input_ids``.
            labels (LongTensor, optional): (B, N) targets; the loss is the mean shifted
                cross-entropy over labels != -100.
            use_cache (bool, optional): return a cache. Default: ``config.use_cache`` in
                eval mode, ``False`` in training.
            logits_to_keep (int or Tensor): compute logits for the last ``logits_to_keep``
                positions only (0, the default, = all), or for these indices.
            past_key_values (IHACache, optional): the cache (the ``transformers`` 4 name).
            return_dict (bool, optional): ``False`` returns a tuple. Default: ``None`` (the
                config's).
            output_hidden_states (bool, optional): return the embeddings and every layer's
                output (``num_hidden_layers + 1`` tensors).
            output_attentions (bool, optional): must be falsy (attention weights are never
                materialised; ``True`` raises ``ValueError``).
            **kwargs: other ``generate()`` keywords, ignored.

        Returns:
            CausalLMOutputWithPast: ``loss``, ``logits`` (B, N, V), the cache,
            ``hidden_states``.
        """
        if output_attentions or (
            output_attentions is None and getattr(self.config, "output_attentions", False)
        ):
            raise ValueError(
                "output_attentions=True is not supported: IHA never materialises attention "
                "weights (it attends over P * N pseudo-tokens in fused kernels); pass "
                "output_attentions=False"
            )
        if output_hidden_states is None:
            output_hidden_states = bool(getattr(self.config, "output_hidden_states", False))
        all_hidden: list[torch.Tensor] | None = [] if output_hidden_states else None
        if past_key_values is not None:
            if cache is not None and cache is not past_key_values:
                raise ValueError("pass the cache as either past_key_values or cache, not both")
            cache = past_key_values
        if use_cache is None:
            use_cache = bool(self.config.use_cache) and not self.training
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None:
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        cache = self._resolve_cache(cache, ref.shape[0], use_cache)
        hidden = self.model.hidden_states(
            input_ids,
            attention_mask=attention_mask,
            cache=None if cache is None else cache.model_cache,
            inputs_embeds=inputs_embeds,
            all_hidden_states=all_hidden,
        )  # (B, N, D)
        if isinstance(logits_to_keep, int):
            if logits_to_keep > 0:
                hidden = hidden[:, -logits_to_keep:]
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.model.lm_head(hidden)  # (B, N, V)
        loss = None
        if labels is not None:
            work = torch.promote_types(logits.dtype, torch.float32)
            shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).to(work)
            shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
            loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        out = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=None if all_hidden is None else tuple(all_hidden),
            **{_CACHE_FIELD: cache},
        )
        if return_dict is False:
            return out.to_tuple()
        return out
