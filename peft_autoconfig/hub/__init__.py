"""Hub integration: push searched configs with model cards (`push_to_hub`), load them back by repo id
(`AutoSearchedConfig.from_pretrained`). See docs/hub.md."""

from .auto_config import AutoSearchedConfig
from .card import build_model_card
from .errors import HubAuthError, HubConfigError, HubConnectionError, HubError, HubNotFoundError
from .push import PushResult, push_to_hub
from .validation import SELECT_RULES, select_point, validate_front

__all__ = [
    "AutoSearchedConfig",
    "HubAuthError",
    "HubConfigError",
    "HubConnectionError",
    "HubError",
    "HubNotFoundError",
    "PushResult",
    "SELECT_RULES",
    "build_model_card",
    "push_to_hub",
    "select_point",
    "validate_front",
]
