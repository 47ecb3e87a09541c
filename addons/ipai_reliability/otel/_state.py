"""Process-wide state of the Odoo OpenTelemetry setup (pure Python, no SDK import).

The Odoo hooks read :data:`STATE.active` before anything else, so an installed hook
costs one attribute read while telemetry is off.
"""

from __future__ import annotations

import threading
from typing import Any


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        #: True between a successful setup and the next shutdown.
        self.active = False
        self.settings: Any = None
        #: ``_pipeline.Providers``: built on the first enabled setup, kept for the process.
        self.providers: Any = None
        #: ``_pipeline.Pipeline`` of the current setup.
        self.pipeline: Any = None
        self.tracer: Any = None
        #: The WSGI middleware wrapping Odoo's application (built once, like the providers).
        self.middleware: Any = None
        self.log_handler: Any = None
        self.hooks_installed = False
        self.exit_hooks_installed = False
        self.service_name = "odoo"


STATE = _State()
