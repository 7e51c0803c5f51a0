"""The baseline config holds the DCASE2018 baseline's values; the variants derive from it."""

import numpy as np
import pytest

from configs import baseline, dcase_scale_synthetic, demo, tiny
from sedjax.models import time_grid


def test_baseline_holds_the_seed_values():
    c = baseline.get_config()
    assert c.data.classes == ("Alarm_bell_ringing", "Blender", "Cat", "Dishes", "Dog",
                              "Electric_shaver_toothbrush", "Frying", "Running_water", "Speech",
                              "Vacuum_cleaner")
    assert c.data.dataset == "dcase2018"
    f = c.features
    assert (f.sample_rate, f.n_fft, f.win_length, f.hop_length) == (44100, 2048, 1764, 882)
    assert (f.window, f.center, f.spectrogram) == ("hamming", True, "magnitude")
    assert (f.n_mels, f.fmin, f.fmax, f.htk, f.mel_norm) == (64, 0.0, 22050.0, False, "slaney")
    assert f.log_eps == np.spacing(1) and f.num_frames == 500
    m = c.model
    assert tuple(m.conv_features) == (64, 64, 64) and tuple(m.conv_kernel) == (3, 3)
    assert [tuple(p) for p in m.pool_sizes] == [(1, 4)] * 3
    assert m.conv_dropout == m.gru_input_dropout == 0.3
    assert m.gru_units == 64 and m.pooling == "mean" and "num_classes" not in m
    assert c.recipe == "two_pass"
    for p, batch in ((c.pass1, 16), (c.pass2, 128)):
        assert p.batch_size == batch and p.num_epochs == 100 and p.learning_rate == 1e-3
        assert (p.early_stopping_patience, p.early_stopping_min_delta,
                p.early_stopping_start_epoch) == (15, 0.01, 5)
    assert c.pass1.val_fraction == 0.2
    assert c.pass1.threshold_grid == pytest.approx([i / 10 for i in range(11)])
    assert (c.postprocess.threshold, c.postprocess.median_filter,
            time_grid.frame_seconds(c)) == (0.5, 51, 0.02)
    e = c.evaluation
    assert (e.t_collar, e.percentage_of_length, e.evaluate_onset, e.evaluate_offset) == (
        0.2, 0.2, True, True)
    assert (c.data.synthetic.num_weak, c.data.synthetic.num_unlabeled,
            c.data.synthetic.num_test) == (1578, 14412, 288)


def _changed(section, base_section) -> set:
    return {k for k in base_section if section[k] != base_section[k]}


def test_demo_and_tiny_keep_the_system_and_change_only_the_documented_training_fields():
    base, d, t = baseline.get_config(), demo.get_config(), tiny.get_config()
    assert d.data.dataset == t.data.dataset == "synthetic"
    for c in (d, t):  # the system itself is the seed's
        assert c.features == base.features
        assert c.model == base.model
        assert c.postprocess == base.postprocess and c.evaluation == base.evaluation
    # schedule and sizes, plus the two changes demo.py's docstring gives a reason for
    assert _changed(d.pass1, base.pass1) == {"num_epochs", "learning_rate"}
    assert _changed(d.pass2, base.pass2) == {"num_epochs", "batch_size",
                                             "early_stopping_patience", "init_from_pass1"}
    assert not base.pass2.init_from_pass1 and d.pass2.init_from_pass1
    assert t.data.synthetic.num_weak < d.data.synthetic.num_weak < base.data.synthetic.num_weak


def test_dcase_scale_synthetic_is_the_baseline_on_synthetic_data():
    base, c = baseline.get_config(), dcase_scale_synthetic.get_config()
    assert c.data.dataset == "synthetic"
    for section in ("features", "model", "pass1", "pass2", "postprocess", "evaluation"):
        assert c[section] == base[section], section
    assert c.data.synthetic == base.data.synthetic  # the real set's sizes


@pytest.mark.parametrize("name", ["mean_teacher", "demo_mean_teacher", "demo_mean_teacher_strong"])
def test_the_augment_variant_turns_on_augmentation_and_nothing_else(name):
    import importlib
    module = importlib.import_module(f"configs.{name}")
    plain, augmented = module.get_config(), module.get_config("augment")
    assert plain.mean_teacher.augment.mixup_share == 0 and plain.mean_teacher.augment.time_mask == 0
    a = augmented.mean_teacher.augment
    assert a.mixup_share > 0 and a.time_mask > 0 and a.freq_mask > 0 and a.time_shift > 0
    # a roll of whole output frames, so that strong labels move with the audio exactly
    assert a.time_shift % time_grid.time_pooling(augmented.model) == 0
    del augmented.mean_teacher.augment, plain.mean_teacher.augment
    assert augmented.to_dict() == plain.to_dict()
    with pytest.raises(ValueError, match="augment"):
        module.get_config("augmnet")


def test_baseline_states_the_dcase_psds_definitions_the_library_names():
    from sedjax.metrics import psds
    assert psds.Settings.from_mapping(baseline.get_config().evaluation.psds) == psds.Settings()
    changed = baseline.get_config()
    changed.evaluation.psds.psds.psds1.max_efpr = 50.0
    assert psds.Settings.from_mapping(changed.evaluation.psds).psds["psds1"].max_efpr == 50.0
