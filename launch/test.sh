#!/usr/bin/env bash
# Runs the test suite (CPU; 4 fake devices are set up by tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest tests "$@"
