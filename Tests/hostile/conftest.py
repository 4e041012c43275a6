"""Minimal conftest for the hostile suite: re-exports the integration fixtures (the lead's version replaces it)."""
import importlib.util
import os
import sys

_INTEGRATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration")
sys.path.insert(0, _INTEGRATION)
_spec = importlib.util.spec_from_file_location("integration_conftest", os.path.join(_INTEGRATION, "conftest.py"))
integration_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(integration_conftest)
procs = integration_conftest.procs
bin_path = integration_conftest.bin_path
