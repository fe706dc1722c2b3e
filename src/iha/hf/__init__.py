"""``transformers`` interface: ``IHAConfig`` and ``IHAForCausalLM`` (needs the ``hf`` extra).

Importing this package registers ``model_type="iha"`` with ``AutoConfig`` and
``AutoModelForCausalLM``:

```python
import iha.hf  # registers the Auto classes
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_config(iha.hf.IHAConfig(attention_variant="iha"))
model.save_pretrained("out")          # config.json + model.safetensors
model = AutoModelForCausalLM.from_pretrained("out")
```
``import iha`` alone does not import ``transformers`` (it takes seconds); import ``iha.hf``.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from iha.hf import converted, loading
from iha.hf.configuration import IHAConfig
from iha.hf.modeling import IHACache, IHACacheLayer, IHAForCausalLM, IHAPreTrainedModel


def register() -> None:
    """Register ``IHAConfig`` / ``IHAForCausalLM`` with the Auto classes (idempotent; done on
    ``import iha.hf``), and the converted model types ``iha_llama``, ``iha_qwen2``,
    ``iha_mistral``.

    Example::

        >>> import iha.hf
        >>> from transformers import AutoConfig
        >>> iha.hf.register()
        >>> type(AutoConfig.for_model("iha")).__name__
        'IHAConfig'
    """
    AutoConfig.register(IHAConfig.model_type, IHAConfig, exist_ok=True)
    AutoModelForCausalLM.register(IHAConfig, IHAForCausalLM, exist_ok=True)
    converted.register()  # iha_llama, iha_qwen2, iha_mistral: checkpoints of iha.hf.convert
    loading.register()  # iha_run: AutoModelForCausalLM.from_pretrained(RUN_DIR)


register()

__all__ = [
    "IHACache",
    "IHACacheLayer",
    "IHAConfig",
    "IHAForCausalLM",
    "IHAPreTrainedModel",
    "register",
]

from iha.hf.convert import convert as convert  # noqa: E402
from iha.hf.convert import freeze_except_mixing as freeze_except_mixing  # noqa: E402
from iha.hf.convert import load_converted as load_converted  # noqa: E402
from iha.hf.loading import LoadedModel as LoadedModel  # noqa: E402
from iha.hf.loading import load_any as load_any  # noqa: E402
