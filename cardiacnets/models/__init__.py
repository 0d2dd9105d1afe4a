"""Models: the ECG and CMR encoders, their pretraining wrappers, and the registry.

`create_model(name, **overrides)` builds any registered model from its typed
config; `list_models()` names them (so tests can be parametrised over all).
"""

from cardiacnets.models.registry import create_model, get_model_config, list_models, register_model

__all__ = ["create_model", "get_model_config", "list_models", "register_model"]
