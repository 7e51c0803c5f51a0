"""Random streams named by what draws from them (sedjax.train.streams)."""

import os
import subprocess
import sys

import numpy as np

from sedjax.train import streams


def test_stream_ids_are_stable_across_processes():
    code = "from sedjax.train import streams; print(streams.stream_id('two_pass', 'pass1'))"
    ids = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": str(s)}, check=True).stdout
           for s in (1, 2)}
    assert ids == {f"{streams.stream_id('two_pass', 'pass1')}\n"}


def test_neighbouring_runs_never_share_a_stream():
    # Before named streams, run k's pass-2 order and run k+1's pass-1 order both drew from
    # default_rng([seed + k + 2, epoch]): the same permutation.
    seed, n = 0, 50
    for k in range(3):
        for epoch in range(3):
            pass2 = streams.numpy_rng(seed + k, "two_pass", "pass2", "order", counter=epoch)
            pass1 = streams.numpy_rng(seed + k + 1, "two_pass", "pass1", "order", counter=epoch)
            assert not np.array_equal(pass2.permutation(n), pass1.permutation(n))


def test_keys_depend_on_every_name_and_the_seed():
    base = np.asarray(streams.key(0, "mean_teacher", "init"))
    assert np.array_equal(base, np.asarray(streams.key(0, "mean_teacher", "init")))
    for other in (streams.key(1, "mean_teacher", "init"), streams.key(0, "mean_teacher", "x"),
                  streams.key(0, "two_pass", "init")):
        assert not np.array_equal(base, np.asarray(other))
    a = streams.numpy_rng(0, "x", counter=1).random(4)
    assert not np.array_equal(a, streams.numpy_rng(0, "x", counter=2).random(4))
    assert not np.array_equal(a, streams.numpy_rng(0, "x").random(4))
