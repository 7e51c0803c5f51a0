"""DESED_task's 2023 baseline (configs/desed_baseline.py) on generated DESED-layout data.

The same features, CRNN, mean teacher, mixup and post-processing; what changes is the data
(synthetic soundscapes written in DESED's layout at 16 kHz, 5-s clips instead of 10-s ones)
and the length of training, sized for a 2-core CPU: under 15 minutes from an empty workdir.
One train step of the DESED CRNN (24 clips of 10 s, student + teacher) takes ~3.7 s on a
2-core CPU, so 10-s clips would leave ~150 steps; 5-s clips halve that cost.
"""

from configs import desed_baseline


def get_config(variant: str = ""):
    """desed_baseline.py on generated data; `:seed_crnn` swaps in the seed's CRNN."""
    c = desed_baseline.get_config()
    c.seed = 0
    d = c.data
    d.dataset = "synthetic"
    d.root = ""  # generated into <workdir>/synthetic
    s = d.synthetic
    s.layout = "desed"
    s.sample_rate = 16000
    s.num_weak, s.num_unlabeled, s.num_strong = 300, 300, 300
    s.num_validation, s.num_test = 200, 100
    d.clip_seconds = 5.0
    c.features.num_frames = 313  # 1 + 5 s * 16000 / 256
    mt = c.mean_teacher
    mt.batch_strong, mt.batch_weak, mt.batch_unlabeled = 6, 6, 12  # half of DESED's
    mt.num_epochs = 25
    mt.steps_per_epoch = 20  # 500 steps (DESED_task: 23,600 of 48 clips)
    # few steps: a higher rate, ramped up over the first 10 % of them (DESED_task: 25 %). At
    # 280 steps of 3e-3 ramped over 25 % the model had not started to localize (validation
    # PSDS1 0.000-0.005 until step 180 of a 500-step run at 5e-3 too); with these settings
    # validation PSDS1 rises from step ~160 on (seed 0)
    mt.learning_rate = 5e-3
    mt.learning_rate_rampup = 0.1
    mt.ema_decay = 0.99  # with 0.999 the teacher would average the untrained first students
    # the teacher: on this set's validation the student's event F1 jumped between epochs
    # (12.1 % then 3.6 %, batches of 16), the teacher's rose steadily (to 14.0 % at 24 clips)
    mt.predict_with = "teacher"
    if variant == "seed_crnn":
        # the seed's CRNN on the same features, with DESED's x4 time pooling and attention
        from configs import baseline
        c.model = baseline.get_config().model
        c.model.pool_sizes = ((2, 4), (2, 4), (1, 8))
        c.model.pooling = "attention"
    elif variant:
        raise ValueError(f"unknown config variant {variant!r}: use '' or 'seed_crnn'")
    return c
