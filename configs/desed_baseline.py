"""The DCASE 2023 Task 4 baseline (DCASE-REPO/DESED_task) on real DESED, value for value.

Every value is DESED_task's recipes/dcase2023_task4_baseline/confs/default.yaml or its code
(desed_task/nnet/CRNN.py, local/sed_trainer.py); tests/test_desed_config.py lists each beside
DESED_task's. Where sedjax differs, the line says so:
- the checkpoint is picked on the validation split's event-based F1 (sedjax's protocol: every
  choice on validation, the public evaluation set scored once); DESED_task picks on the
  synthetic validation set + 10 % of the weak clips and reports its validation set;
- mixup mixes the scaled features (DESED_task: the linear mel magnitudes before log/scaler);
- labels: frame i is active when an event covers most of it (DESED_task: onset floored,
  offset ceiled);
- DESED_task reports the student at 2023; predict_with = 'student' here too.
"""

import ml_collections

from configs import baseline, mean_teacher


def add_desed_features(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """DESED_task's features: torchaudio MelSpectrogram (16 kHz, n_fft = window = 2048, hop 256,
    128 HTK bands 0-8 kHz, symmetric Hamming window, magnitude), AmplitudeToDB (amin 1e-5)
    clamped to [-50, 80] dB, TorchScaler('instance', 'minmax', dims (1, 2))."""
    f = c.features
    f.sample_rate = 16000
    f.n_fft = 2048
    f.win_length = 2048
    f.hop_length = 256
    f.window = "hamming"
    f.window_periodic = False  # torch.hamming_window(periodic=False)
    f.center = True
    f.pad_mode = "reflect"
    f.spectrogram = "magnitude"  # power=1
    f.n_mels = 128
    f.fmin = 0.0
    f.fmax = 8000.0
    f.htk = True  # torchaudio's default mel scale
    f.mel_norm = "none"  # torchaudio's default: triangles not area-normalized
    f.log = "db"
    f.db_amin = 1e-5
    f.db_range = (-50.0, 80.0)
    f.scaler = "instance_minmax"
    f.num_frames = 626  # 1 + 10 s * 16000 / 256
    return c


def add_desed_crnn(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """DESED_task's CRNN (default.yaml `net`): sedjax/models/desed_crnn.py."""
    m = c.model
    m.arch = "desed_crnn"
    m.conv_features = (16, 32, 64, 128, 128, 128, 128)
    m.conv_kernel = (3, 3)
    m.pool_sizes = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2))  # (time, freq)
    m.conv_dropout = 0.5
    # torch BatchNorm2d(momentum=0.99) weighs the NEW batch by 0.99; flax's momentum weighs the
    # running average: the same update is flax momentum 0.01
    m.batchnorm_momentum = 0.01
    m.batchnorm_epsilon = 1e-3
    m.gru_units = 128
    m.gru_layers = 2
    m.gru_input_dropout = 0.0  # dropout_recurrent 0
    m.head_dropout = 0.5
    m.pooling = "attention"  # softmax over classes, clip = sum p w / sum w
    return c


def add_desed_training(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """default.yaml's `training` and `opt` for the mean-teacher recipe."""
    mt = c.mean_teacher
    mt.batch_strong, mt.batch_weak, mt.batch_unlabeled = 12, 12, 24
    mt.num_epochs = 200
    # DESED_task: an epoch ends with its shortest part (1420 weak clips // 12 = 118 batches)
    mt.steps_per_epoch = 118
    mt.learning_rate = 1e-3
    mt.adam_b1, mt.adam_b2, mt.adam_eps = 0.9, 0.999, 1e-8
    mt.ema_decay = 0.999
    mt.consistency_weight = 2.0  # const_max
    mt.consistency_rampup = 50 / 200  # n_epochs_warmup of n_epochs
    mt.learning_rate_rampup = 50 / 200  # ExponentialWarmup on the learning rate too
    mt.early_stopping_patience = 200  # early_stop_patience = n_epochs: no early stopping
    mt.early_stopping_min_delta = 0.0
    mt.early_stopping_start_epoch = 0
    mt.predict_with = "student"
    a = mt.augment
    a.mixup_share, a.mixup_alpha = 0.5, 0.2  # mixup 'soft' on half of the batches, Beta(0.2, 0.2)
    a.time_mask = a.freq_mask = a.time_shift = 0
    c.postprocess.median_filter = 7  # median_window
    c.postprocess.threshold = 0.5  # val_thresholds
    return c


def get_config() -> ml_collections.ConfigDict:
    """DESED_task's 2023 baseline on real DESED at data.root."""
    c = mean_teacher.add_mean_teacher(baseline.get_config())
    c.seed = 42
    c.data.dataset = "desed"
    c.data.root = "~/data/dcase/dataset"  # DESED_task's data/dcase/dataset
    c.data.use_strong = True
    c.data.use_validation = True
    c.data.resample_cache = True  # DESED_task resamples 44.1 kHz audio once (*_16k folders)
    return add_desed_training(add_desed_crnn(add_desed_features(c)))
