"""The OTLP bridge: OpenTelemetry traces and logs in, deduplicated ops error rows out.

``ipai-ops bridge serve`` (:mod:`ipai_ops.bridge.cli`) runs it; settings are in
:mod:`ipai_ops.bridge.settings`; how records become occurrences is in
:mod:`ipai_ops.bridge.extract`; docs/bridge.md is the operator's guide.
"""
