"""configs/desed_baseline.py holds DESED_task's 2023 baseline (default.yaml + code), value for
value; each line of DESED_TASK names where DESED_task keeps the value."""

import pytest

from configs import demo_desed, desed_baseline
from sedjax.config import validate

# (sedjax config field, DESED_task's value, where DESED_task has it); DCASE-REPO/DESED_task,
# recipes/dcase2023_task4_baseline (confs/default.yaml unless said otherwise)
DESED_TASK = [
    ("recipe", "mean_teacher", "local/sed_trainer.py: SEDTask4 (student + EMA teacher)"),
    ("seed", 42, "training.seed"),
    ("features.sample_rate", 16000, "feats.sample_rate"),
    ("features.n_fft", 2048, "feats.n_window"),
    ("features.win_length", 2048, "feats.n_window"),
    ("features.hop_length", 256, "feats.hop_length"),
    ("features.n_mels", 128, "feats.n_mels"),
    ("features.fmin", 0.0, "feats.f_min"),
    ("features.fmax", 8000.0, "feats.f_max"),
    ("features.window", "hamming", "sed_trainer.py: window_fn=torch.hamming_window"),
    ("features.window_periodic", False, "sed_trainer.py: wkwargs={'periodic': False}"),
    ("features.spectrogram", "magnitude", "sed_trainer.py: MelSpectrogram(power=1)"),
    ("features.htk", True, "torchaudio MelSpectrogram default mel_scale='htk'"),
    ("features.mel_norm", "none", "torchaudio MelSpectrogram default norm=None"),
    ("features.center", True, "torchaudio default center=True"),
    ("features.pad_mode", "reflect", "torchaudio default pad_mode='reflect'"),
    ("features.log", "db", "sed_trainer.py take_log: AmplitudeToDB(stype='amplitude')"),
    ("features.db_amin", 1e-5, "sed_trainer.py take_log: amp_to_db.amin = 1e-5"),
    ("features.db_range", (-50.0, 80.0), "sed_trainer.py take_log: .clamp(min=-50, max=80)"),
    ("features.scaler", "instance_minmax", "scaler.statistic instance, scaler.normtype minmax"),
    ("features.num_frames", 626, "data.audio_max_len 10 s * fs 16000 / hop 256 + 1"),
    ("features.pad_to_num_frames", True, "datasets.py pad_audio: zeros to audio_max_len * fs"),
    ("model.arch", "desed_crnn", "desed_task/nnet/CRNN.py"),
    ("model.conv_features", (16, 32, 64, 128, 128, 128, 128), "net.nb_filters"),
    ("model.conv_kernel", (3, 3), "net.kernel_size [3]*7, padding 1, stride 1"),
    ("model.pool_sizes", ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2)),
     "net.pooling"),
    ("model.conv_dropout", 0.5, "net.dropout (CNN conv_dropout)"),
    ("model.batchnorm_epsilon", 1e-3, "CNN.py: BatchNorm2d(eps=0.001)"),
    # torch momentum 0.99 weighs the new batch; flax's momentum weighs the running average
    ("model.batchnorm_momentum", 1 - 0.99, "CNN.py: BatchNorm2d(momentum=0.99)"),
    ("model.gru_units", 128, "net.n_RNN_cell"),
    ("model.gru_layers", 2, "CRNN.py: n_layers_RNN=2"),
    ("model.gru_input_dropout", 0.0, "net.dropout_recurrent"),
    ("model.head_dropout", 0.5, "net.dropout (before the dense heads)"),
    ("model.pooling", "attention", "net.attention True (softmax over classes)"),
    ("mean_teacher.batch_strong", 12, "training.batch_size[0] (synth)"),
    ("mean_teacher.batch_weak", 12, "training.batch_size[1] (weak)"),
    ("mean_teacher.batch_unlabeled", 24, "training.batch_size[2] (unlabel)"),
    ("mean_teacher.num_epochs", 200, "training.n_epochs"),
    ("mean_teacher.steps_per_epoch", 118, "ConcatDatasetBatchSampler: 1420 weak // 12"),
    ("mean_teacher.learning_rate", 1e-3, "opt.lr"),
    ("mean_teacher.adam_b1", 0.9, "train_sed.py: torch.optim.Adam defaults"),
    ("mean_teacher.adam_b2", 0.999, "train_sed.py: torch.optim.Adam defaults"),
    ("mean_teacher.adam_eps", 1e-8, "train_sed.py: torch.optim.Adam defaults"),
    ("mean_teacher.ema_decay", 0.999, "training.ema_factor"),
    ("mean_teacher.consistency_weight", 2.0, "training.const_max"),
    ("mean_teacher.consistency_rampup", 50 / 200, "training.n_epochs_warmup / n_epochs"),
    ("mean_teacher.learning_rate_rampup", 50 / 200, "ExponentialWarmup on the optimizer"),
    ("mean_teacher.step_timing", "desed_task",
     "schedulers.py ExponentialWarmup step_num from 1, lr set after the first update; "
     "sed_trainer.py on_before_zero_grad: EMA before optimizer.step (Lightning 1.9 closure)"),
    ("mean_teacher.checkpoint_metric", "psds1", "DESED's reported metric (DESED_task: "
     "ModelCheckpoint on val/obj_metric, synthetic intersection F1 + weak F1)"),
    ("mean_teacher.early_stopping_patience", 200, "training.early_stop_patience"),
    ("mean_teacher.augment.mixup_share", 0.5, "sed_trainer.py: mixup when 0.5 > random()"),
    ("mean_teacher.augment.mixup_alpha", 0.2, "data_augm.py mixup: Beta(0.2, 0.2), 'soft'"),
    ("mean_teacher.augment.time_mask", 4, "CRNN.py specaugm_t_l 5: floor(U * 5) frames"),
    ("mean_teacher.augment.freq_mask", 9, "CRNN.py specaugm_f_l 10: floor(U * 10) mel bands"),
    ("mean_teacher.augment.mask_teacher", True, "CRNN.apply_specaugment in train mode: the "
     "teacher runs in train mode too"),
    ("mean_teacher.predict_with", "student", "the 2023 README reports the student"),
    ("postprocess.median_filter", 7, "training.median_window"),
    ("postprocess.threshold", 0.5, "training.val_thresholds"),
    ("evaluation.t_collar", 0.2, "sed_trainer.py: compute_sed_eval_metrics, t_collar 0.2"),
    ("evaluation.percentage_of_length", 0.2, "sed_eval EventBasedMetrics, 20 % of length"),
    ("data.dataset", "desed", "the DESED layout"),
    ("data.use_strong", True, "synth_tsv (+ strong_tsv with --strong_real)"),
    ("data.frame_labels", "desed_task",
     "desed_task/utils/encoder.py encode_strong_df: onset floored, offset ceiled"),
    ("data.resample_copy", "desed_task",
     "local/resample_folder.py: librosa.resample per channel, torchaudio.save 16-bit"),
]


def _get(config, dotted):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("field,value,where", DESED_TASK, ids=[d[0] for d in DESED_TASK])
def test_value_equals_desed_tasks(field, value, where):
    got = _get(desed_baseline.get_config(), field)
    if isinstance(value, float):
        assert got == pytest.approx(value), where
    else:
        assert (tuple(map(tuple, got)) if field == "model.pool_sizes" else
                tuple(got) if isinstance(value, tuple) else got) == value, where


def test_psds_settings_are_dcase_2023s():
    from sedjax.metrics import psds
    s = psds.Settings.from_mapping(desed_baseline.get_config().evaluation.get("psds"))
    assert (s.psds["psds1"].dtc_threshold, s.psds["psds1"].gtc_threshold,
            s.psds["psds1"].alpha_ct, s.psds["psds1"].max_efpr) == (0.7, 0.7, 0.0, 100.0)
    assert (s.psds["psds2"].dtc_threshold, s.psds["psds2"].gtc_threshold,
            s.psds["psds2"].cttc_threshold, s.psds["psds2"].alpha_ct) == (0.1, 0.1, 0.3, 0.5)


@pytest.mark.parametrize("make", [desed_baseline.get_config, demo_desed.get_config,
                                  lambda: demo_desed.get_config("seed_crnn")])
def test_desed_configs_validate(make):
    validate.validate(make(), num_devices=4)


def test_demo_keeps_the_baselines_system():
    """demo_desed changes the data and the length of training, not features or model."""
    demo, base = demo_desed.get_config(), desed_baseline.get_config()
    for field in ("sample_rate", "n_fft", "hop_length", "n_mels", "fmax", "htk", "log",
                  "scaler", "window_periodic"):
        assert demo.features[field] == base.features[field]
    assert demo.model.to_dict() == base.model.to_dict()
    assert demo.data.synthetic.layout == "desed"
