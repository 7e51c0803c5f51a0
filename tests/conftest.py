"""Test setup: four fake CPU devices (before jax is imported) and small shared helpers."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# the session's compiled programs cached in a folder of its own (shared with the processes it
# starts), not in the user's cache: every CI run starts cold, as a new user does
os.environ.setdefault("SEDJAX_CACHE_DIR", tempfile.mkdtemp(prefix="sedjax-test-cache-"))

try:  # hypothesis (a test extra): few cases by default, `--hypothesis-profile=long` for more
    from hypothesis import HealthCheck, settings
except ImportError:
    pass
else:
    _slow_cases = dict(deadline=None, suppress_health_check=[
        HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    settings.register_profile("sedjax", max_examples=12, derandomize=True, **_slow_cases)
    settings.register_profile("long", max_examples=300, **_slow_cases)
    settings.load_profile("sedjax")  # the plugin loads --hypothesis-profile's after this
