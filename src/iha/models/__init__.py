"""Decoder LMs with the paper's five attention variants (global, global_local, talking_heads,
diff, iha) plus iha_global and explicit per-layer schedules.

```python
from iha.models import ModelConfig, DecoderLM, generate, describe, get_preset
cfg = get_preset("tiny", attention_variant="iha")
model = DecoderLM(cfg)
logits = model(input_ids)                                  # (B, N, V)
new = generate(model, input_ids, max_new_tokens=16)        # (B, new)
describe(cfg)                                              # params and FLOPs per variant
```
"""

from iha.models.config import KIND_LETTERS, LAYER_KINDS, VARIANTS, ModelConfig
from iha.models.counts import model_flops
from iha.models.describe import count_parameters, describe, markdown_table
from iha.models.generate import generate, sample_next
from iha.models.layers import DiffAttention, MultiHeadAttention, RMSNorm, TalkingHeadsAttention
from iha.models.model import DecoderLayer, DecoderLM, ModelCache
from iha.models.presets import get_preset, list_presets, preset_assumptions

__all__ = [
    "KIND_LETTERS",
    "LAYER_KINDS",
    "VARIANTS",
    "DecoderLM",
    "DecoderLayer",
    "DiffAttention",
    "ModelCache",
    "ModelConfig",
    "MultiHeadAttention",
    "RMSNorm",
    "TalkingHeadsAttention",
    "count_parameters",
    "describe",
    "generate",
    "get_preset",
    "list_presets",
    "preset_assumptions",
    "markdown_table",
    "model_flops",
    "sample_next",
]
