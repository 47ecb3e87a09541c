"""``ipai-ops bridge serve``: the OTLP bridge (settings: :mod:`ipai_ops.bridge.settings`)."""

from __future__ import annotations

import argparse

from ipai_ops.cli import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    from ipai_ops.bridge import settings as bridge_settings

    bridge = subparsers.add_parser("bridge", help="the OTLP bridge: OpenTelemetry errors -> ops.agent_errors")
    sub = bridge.add_subparsers(dest="bridge_command", metavar="ACTION", required=True)
    serve = sub.add_parser(
        "serve",
        help="receive OTLP/HTTP and OTLP/gRPC traces and logs; write their errors to ops.agent_errors",
        description="Every flag has an environment variable of the same name (IPAI_BRIDGE_*, IPAI_OPS_DSN).",
    )
    bridge_settings.add_arguments(serve)
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ipai_ops.bridge import server
    from ipai_ops.bridge import settings as bridge_settings
    from ipai_ops.registry import default_registry

    try:
        settings = bridge_settings.from_args(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    problems = settings.validate()
    if problems:
        raise CliError("invalid bridge settings: " + "; ".join(problems))
    refusal = server.check_protobuf_backend(allow_python=settings.allow_python_protobuf)
    if refusal:
        raise CliError(refusal)
    exposed = bridge_settings.exposure_problem(settings)
    if exposed:
        raise CliError(exposed)
    busy = server.ports_in_use(settings)
    if busy:
        raise CliError("cannot listen: " + "; ".join(busy))
    # Fail fast on a broken registry (RegistryError is reported by ipai_ops.cli) before forking.
    default_registry()
    server.configure_logging(settings.log_level)
    return server.run(settings)
