"""Run pictures: training curves and piano rolls are written (and are real PNG images)."""

import numpy as np

from sedjax.reporting import plots


def _png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    return data


def test_training_curves_and_piano_roll(tmp_path):
    history = [{"epoch": e, "loss": 1.0 / e, "weak": 0.9 / e, "val_score": min(0.2 * e, 0.8),
                "seconds": 1.0} for e in range(1, 7)]
    out = plots.plot_training_curves({"pass1": history, "pass2": history[:2], "empty": []},
                                     tmp_path / "curves.png", {"pass1": 4})
    _png(tmp_path / "curves.png")
    assert out == str(tmp_path / "curves.png")
    assert plots.plot_training_curves({}, tmp_path / "none.png") is None
    rng = np.random.default_rng(0)
    clip = {"filename": "a.wav", "logmel": rng.standard_normal((500, 64)), "valid_frames": 400,
            "probs": rng.random((125, 3)), "reference": [(1.0, 2.5, "Dog")],
            "estimated": [(1.1, 2.4, "Dog"), (5.0, 6.0, "Cat")]}
    plots.plot_piano_rolls([clip, dict(clip, filename="b.wav")], ["Cat", "Dog", "Speech"],
                           0.08, 0.02, 0.5, tmp_path / "roll.png")
    _png(tmp_path / "roll.png")
    assert plots.plot_piano_rolls([], ["Cat"], 0.08, 0.02, 0.5, tmp_path / "x.png") is None
