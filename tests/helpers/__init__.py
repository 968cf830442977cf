"""Test helpers shared by the test packages (tests/ is on sys.path: see tests/conftest.py)."""
