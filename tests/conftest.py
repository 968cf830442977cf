import os

# Internal errors of the SDK fail the test instead of being counted and swallowed.
os.environ.setdefault("PREDLOG_RAISE_INTERNAL_ERRORS", "1")

pytest_plugins = ["predlog.testing"]
