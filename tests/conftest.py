"""Test setup: four fake CPU devices (before jax is imported) and small shared helpers."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# the session's compiled programs cached in a folder of its own (shared with the processes it
# starts), not in the user's cache: every CI run starts cold, as a new user does
os.environ.setdefault("SEDJAX_CACHE_DIR", tempfile.mkdtemp(prefix="sedjax-test-cache-"))
