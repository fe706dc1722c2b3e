"""``IHAConfig``: the ``transformers`` config of ``iha`` decoder LMs (``model_type="iha"``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import PretrainedConfig

from iha.cache import CACHE_POLICIES
from iha.models.config import ModelConfig
from iha.rope import check_rope_scaling
from iha.validate import check_choice

MODEL_FIELDS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


class IHAConfig(PretrainedConfig):
    """Every :class:`iha.models.ModelConfig` field under the same (Hugging Face) name, plus
    ``use_cache``, ``cache_policy`` ("raw" or "pseudo", for IHA layers during generation) and
    the usual token ids. ``to_model_config()`` gives the plain config the network is built from.

    RoPE scaling is accepted as ``rope_scaling`` (``transformers`` 4 name) or ``rope_parameters``
    (``transformers`` 5, with ``rope_theta`` inside) and stored the way the installed
    ``transformers`` stores it, so ``config.rope_scaling`` reads back and config.json round-trips.
    ``iha_window`` is written to config.json as a number (see :class:`iha.models.ModelConfig`).

    Args:
        vocab_size (int): token ids 0 .. vocab_size - 1. Default: 259.
        hidden_size (int): model width D. Default: 64.
        num_hidden_layers (int): decoder blocks. Default: 2.
        num_attention_heads (int): query heads H. Default: 4.
        num_key_value_heads (int, optional): key/value heads G. Default: ``None`` (G = H).
        intermediate_size (int, optional): MLP width. Default: ``None`` (8/3 D, multiple of 8).
        max_position_embeddings (int): the training context N. Default: 256.
        rope_theta (float): RoPE base. Default: 10000.0.
        rope_scaling (dict, optional): RoPE scaling rule (``transformers`` 4 name). Default:
            ``None``.
        rope_parameters (dict, optional): the same rule in the ``transformers`` 5 form (with
            ``rope_theta`` inside); used when ``rope_scaling`` is ``None``. Default: ``None``.
        rms_norm_eps (float): RMSNorm epsilon. Default: 1e-5.
        tie_word_embeddings (bool): share the input embedding and the LM head. Default:
            ``False``.
        attention_variant (str): ``"global"`` (default), ``"global_local"``,
            ``"talking_heads"``, ``"diff"``, ``"iha"`` or ``"iha_global"``.
        num_pseudo_heads (int, optional): P of the IHA layers. Default: ``None`` (P = H).
        sliding_window (int): window in tokens of local MHA layers. Default: 512.
        iha_window (int, optional): window in tokens of local IHA layers. Default: ``None``
            (N / (2 P^2), then stored).
        layer_schedule (str or list, optional): explicit schedule (letters or kind names).
            Default: ``None``.
        iha_collapse (str): ``"global"`` (default) or ``"per_head"``.
        iha_mask (str): ``"flat"`` (default) or ``"token"``.
        iha_positions (str): ``"virtual"`` (default) or ``"token"``.
        initializer_range (float): init std. Default: 0.02.
        attention_backend (str): ``iha.functional`` backend. Default: ``"auto"``.
        use_cache (bool): ``forward`` returns a cache by default (in eval mode). Default:
            ``True``.
        cache_policy (str): ``"raw"`` (default) or ``"pseudo"``, for IHA layers during
            generation (same tokens, different memory).
        pad_token_id (int, optional): padding token id. Default: ``None``.
        bos_token_id (int, optional): beginning-of-sequence id. Default: ``None``.
        eos_token_id (int or list[int], optional): end-of-sequence id(s). Default: ``None``.
        **kwargs: passed to ``transformers.PretrainedConfig`` (``mlp_type`` and other
            ``ModelConfig`` fields are kept as attributes).

    Example::

        >>> import iha.hf
        >>> cfg = iha.hf.IHAConfig(attention_variant="iha", hidden_size=32, num_pseudo_heads=2)
        >>> cfg.model_type, cfg.to_model_config().attention_variant
        ('iha', 'iha')
    """

    model_type = "iha"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size: int = 259,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 256,
        rope_theta: float = 10000.0,
        rope_scaling: dict[str, Any] | None = None,
        rope_parameters: dict[str, Any] | None = None,
        rms_norm_eps: float = 1e-5,
        tie_word_embeddings: bool = False,
        attention_variant: str = "global",
        num_pseudo_heads: int | None = None,
        sliding_window: int = 512,
        iha_window: int | None = None,
        layer_schedule: str | list[str] | None = None,
        iha_collapse: str = "global",
        iha_mask: str = "flat",
        iha_positions: str = "virtual",
        initializer_range: float = 0.02,
        attention_backend: str = "auto",
        use_cache: bool = True,
        cache_policy: str = "raw",
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        if rope_scaling is None and rope_parameters is not None:  # the transformers 5 form
            rope_theta = rope_parameters.get("rope_theta", rope_theta)
            rope_scaling = rope_parameters
        self.rope_theta = rope_theta
        scaling = check_rope_scaling(rope_scaling)
        if isinstance(getattr(type(self), "rope_scaling", None), property):
            # transformers 5: rope_scaling reads rope_parameters, which also holds the base
            rule = scaling or {"rope_type": "default"}
            self.rope_parameters = {"rope_theta": rope_theta, **rule}
        else:
            self.rope_scaling = scaling
        self.rms_norm_eps = rms_norm_eps
        self.attention_variant = attention_variant
        self.num_pseudo_heads = num_pseudo_heads
        self.sliding_window = sliding_window
        self.iha_window = iha_window
        self.layer_schedule = (
            list(layer_schedule) if isinstance(layer_schedule, tuple) else (layer_schedule)
        )
        self.iha_collapse = iha_collapse
        self.iha_mask = iha_mask
        self.iha_positions = iha_positions
        self.initializer_range = initializer_range
        self.attention_backend = attention_backend
        self.use_cache = use_cache
        check_choice("cache_policy", cache_policy, CACHE_POLICIES)
        self.cache_policy = cache_policy
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        # validates every field (ValueError naming the bad one) and stores the derived window
        self.iha_window = self.to_model_config().iha_window

    def to_model_config(self) -> ModelConfig:
        """The :class:`iha.models.ModelConfig` of these fields."""
        # a field missing from an older config.json takes its ModelConfig default
        return ModelConfig.from_dict(
            {name: getattr(self, name, default) for name, default in MODEL_FIELDS.items()}
        )

    @classmethod
    def from_model_config(cls, config: ModelConfig, **kwargs: Any) -> IHAConfig:
        """An ``IHAConfig`` with the fields of ``config`` (``kwargs``: HF-only settings)."""
        return cls(**config.to_dict(), **kwargs)
