from . import models, wizard
from .hooks import post_init_hook, pre_init_hook


def _ipai_otel_post_load():
    # Imported lazily: the OpenTelemetry SDK is optional and configured from OTEL_* variables.
    from .otel import setup_from_env

    setup_from_env()


__all__ = ["_ipai_otel_post_load", "models", "post_init_hook", "pre_init_hook", "wizard"]
