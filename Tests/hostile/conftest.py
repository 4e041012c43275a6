"""Hostile suite: the integration fixtures (real processes, ptys, peers), re-exported. Minimal placeholder for the
lead's conftest (COMMON.md). The integration conftest is loaded under the name `integration_conftest` (a second
module called `conftest` would be this file itself); tests import helpers from there."""
import importlib.util
import pathlib
import sys

_path = pathlib.Path(__file__).resolve().parent.parent / "integration" / "conftest.py"
if "integration_conftest" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("integration_conftest", _path)
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["integration_conftest"] = _module
    _spec.loader.exec_module(_module)

from integration_conftest import *  # noqa: E402,F401,F403  (fixtures: procs, pty, bin_path, …)
