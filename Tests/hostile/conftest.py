"""The hostile suite (issue 12) uses the integration suite's fixtures and helpers: processes, ptys, the pymodbus
peer, and `start_service`, which runs the service as the board's unit does (Tests/support/boardrun.py).

Test files import helpers with `from integration_conftest import …` (the integration conftest loaded under that
name, so that it never clashes with this file's own module name)."""
import importlib.util
import pathlib
import sys

_path = pathlib.Path(__file__).resolve().parent.parent / "integration" / "conftest.py"
_spec = importlib.util.spec_from_file_location("integration_conftest", _path)
integration_conftest = importlib.util.module_from_spec(_spec)
sys.modules["integration_conftest"] = integration_conftest
_spec.loader.exec_module(integration_conftest)

# Fixtures are found by name in this module's namespace.
bin_path = integration_conftest.bin_path
procs = integration_conftest.procs
pty = integration_conftest.pty
faulty_bus = integration_conftest.faulty_bus
