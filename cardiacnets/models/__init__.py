"""Models: the ECG and CMR encoders, their pretraining wrappers, the alignment model, the segmenter, and the registry.

`create_model(name, **overrides)` builds any registered model from its typed
config; `list_models()` names them (so tests can be parametrised over all).
Importing this package registers its models: `zoo` (encoders, pretraining and
alignment models) and `segmenter` register themselves with the registry and
their classes with `cardiacnets.models.pretrained.load_pretrained`.
"""

from cardiacnets.models import segmenter, zoo  # noqa: F401  (import-time registration of the package's models)
from cardiacnets.models.registry import create_model, get_model_config, list_models, register_model

__all__ = ["create_model", "get_model_config", "list_models", "register_model"]
