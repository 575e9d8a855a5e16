"""The quick subset (`pytest -m "not slow"`) leaves out exactly the tests conftest.SLOW_TESTS names: a renamed test
must not drop out of that list silently."""
from pathlib import Path

from conftest import SLOW_TESTS


def test_every_test_named_slow_exists():
    tests = Path(__file__).resolve().parent
    missing = [f"{file}::{name}" for file, names in SLOW_TESTS.items() for name in names
               if name != "*" and f"def {name}(" not in (tests / file).read_text()]
    assert not missing, f"conftest.SLOW_TESTS names tests that do not exist: {missing}"
