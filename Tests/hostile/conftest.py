"""The hostile suite (issue 12) uses the integration suite's fixtures and helpers: processes, ptys, the pymodbus
peer, and `start_service`, which runs the service as the board's unit does (Tests/support/boardrun.py).

Test files import helpers with `from integration_conftest import …` (the integration conftest loaded under that
name, so that it never clashes with this file's own module name)."""
import importlib.util
import pathlib
import sys

import pytest

_path = pathlib.Path(__file__).resolve().parent.parent / "integration" / "conftest.py"
_spec = importlib.util.spec_from_file_location("integration_conftest", _path)
integration_conftest = importlib.util.module_from_spec(_spec)
sys.modules["integration_conftest"] = integration_conftest
_spec.loader.exec_module(integration_conftest)

# Fixtures are found by name in this module's namespace. Everything else is re-exported too: pytest imports both
# suites' conftest.py as the module `conftest`, so an integration test's `from conftest import …` may meet this file
# when both folders run in one session.
globals().update({k: v for k, v in vars(integration_conftest).items() if not k.startswith("__")})


@pytest.fixture
def board(bin_path):
    """A state directory owned by nobody, for the tests that check files across users (Tests/hostile/unprivileged.py)."""
    from unprivileged import Board  # refuses to load unless run as root
    b = Board(bin_path)
    yield b
    b.cleanup()
