#!/usr/bin/env python3
"""CI entry point: validate ssot/errors/failure_modes.yaml and every runbook.

A thin wrapper over ``ipai-ops ssot check`` for pipelines that call scripts by path.
"""

import sys

from ipai_ops.cli import main

if __name__ == "__main__":
    sys.exit(main(["ssot", "check", "--strict", *sys.argv[1:]]))
