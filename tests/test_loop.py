"""The shared epoch loop: early stopping as the seed's Keras callback, best state kept, resume.

One run (K = 1): the state and metric sums carry a run axis of length 1, validate gives one
score per run (as every recipe calls the loop).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sedjax.system import sharding
from sedjax.train import loop


def _stopping(patience=2, min_delta=0.01, start_epoch=1):
    return loop.EarlyStopping(patience, min_delta, start_epoch)


def test_early_stopping_rules():
    s, state = _stopping(patience=2, min_delta=0.01, start_epoch=5), loop.LoopState()
    # a gain of exactly min_delta is not an improvement; stopping waits for start_epoch
    for epoch, score in enumerate([0.5, 0.6, 0.61, 0.605, 0.6]):
        s.update(state, epoch, score)
    assert (state.best_score, state.best_epoch, state.wait) == (0.6, 1, 3)
    assert state.stopped  # epoch 5 reached and 3 >= 2 epochs without a gain
    state = loop.LoopState()
    for epoch, score in enumerate([0.5, 0.6, 0.61]):
        s.update(state, epoch, score)
    assert not state.stopped  # before start_epoch


def _fit(tmp_path, scores, num_epochs, calls):
    """A tiny 'model': a counter that each epoch adds 1 to; the score follows `scores`."""
    state = sharding.replicate({"w": jnp.zeros((1, 3))}, sharding.make_mesh(jax.devices()[:1]))

    def train_epoch(state, epoch, resume):
        calls.append(epoch)
        return {"w": state["w"] + 1}, {"loss_sum": np.float32([2.0 * (epoch + 1)]),
                                       "count": np.float32([2.0])}

    def validate(state):
        return [scores[int(state["w"][0, 0]) - 1]]

    best, progress = loop.fit("tiny", state, num_epochs, _stopping(), train_epoch, validate,
                              tmp_path)
    assert len(progress) == 1  # one run
    return best, progress[0]


def test_a_tiny_run_stops_early_and_returns_the_best_state(tmp_path):
    calls = []
    best, progress = _fit(tmp_path, [0.1, 0.5, 0.505, 0.4, 0.3, 0.2, 0.1], 7, calls)
    assert calls == [0, 1, 2, 3]  # best at epoch 2 (0-based 1): +0.005 is below min_delta
    assert progress.stopped and progress.best_epoch == 1 and progress.epoch == 3
    assert float(best["w"][0, 0]) == 2.0  # the state after the best epoch, not the last one
    assert [h["loss"] for h in progress.history] == [1.0, 2.0, 3.0, 4.0]
    assert [h["val_score"] for h in progress.history] == [0.1, 0.5, 0.505, 0.4]
    # a rerun resumes a stopped loop: no epoch is trained again, same best state
    calls.clear()
    again, progress2 = _fit(tmp_path, [0.1, 0.5, 0.505, 0.4, 0.3, 0.2, 0.1], 7, calls)
    assert calls == [] and float(again["w"][0, 0]) == 2.0
    assert dataclasses.asdict(progress2) == dataclasses.asdict(progress)


def test_a_killed_loop_resumes_after_its_last_finished_epoch(tmp_path):
    scores = [0.1, 0.2, 0.3, 0.4, 0.5]
    calls = []

    class Killed(Exception):
        pass

    def killer(state, epoch):  # validation of epoch 3 never finishes
        if int(state["w"][0, 0]) == 3:
            raise Killed
        return [scores[int(state["w"][0, 0]) - 1]]

    state = sharding.replicate({"w": jnp.zeros((1, 3))}, sharding.make_mesh(jax.devices()[:1]))
    with pytest.raises(Killed):
        loop.fit("tiny", state, 5, _stopping(),
                 lambda s, e, resume: (calls.append(e) or {"w": s["w"] + 1}, {"count": np.ones(1)}),
                 lambda s: killer(s, None), tmp_path)
    calls.clear()
    best, progress = _fit(tmp_path, scores, 5, calls)
    assert calls == [2, 3, 4]  # epochs 0 and 1 were saved before the kill
    assert float(best["w"][0, 0]) == 5.0 and progress.best_epoch == 4
    assert len(progress.history) == 5


def test_loop_state_round_trips_through_json():
    state = loop.LoopState(epoch=3, best_score=0.5, best_epoch=2, wait=1, stopped=False,
                           history=[{"epoch": 1}])
    assert loop.LoopState.from_json(dataclasses.asdict(state)) == state
    with pytest.raises(TypeError):
        loop.LoopState.from_json({"epoch": 1, "best_f1": 0.3})  # not a loop state
