"""Parity tests against DESED_task's own code (tests/parity/conftest.py says how to run them)."""
