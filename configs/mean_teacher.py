"""Mean teacher (the DCASE2019 baseline, with DESED's x4 time pooling) on the real data layout.

Reads a DCASE2018 layout (weak + unlabeled) or a DCASE2019-style one (plus strongly labelled
synthetic clips in metadata/train/synthetic.csv). Features, CRNN blocks, post-processing and
metric stay the seed's; what changes is how the model is trained (sedjax/recipes/mean_teacher.py),
its clip pooling (attention) and its output rate (x4 time pooling: 80 ms frames).
"""

import ml_collections

from configs import baseline


def add_mean_teacher(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Switches a config to the mean-teacher recipe with the DCASE2019 baseline's settings."""
    c.recipe = "mean_teacher"
    c.data.use_strong = True  # used when the layout has metadata/train/synthetic.csv
    c.model.pooling = "attention"  # DCASE2019 baseline
    c.model.pool_sizes = ((2, 4), (2, 4), (1, 4))  # x4 in time (DESED): 125 frames of 80 ms
    c.postprocess.median_filter = 7  # output frames (0.56 s)

    c.mean_teacher = mt = ml_collections.ConfigDict()
    # clips of each kind per batch (DCASE2019: 6 / 12 / 6); without a strong split in the
    # dataset, its share of the batch is filled with weak clips
    mt.batch_weak = 6
    mt.batch_unlabeled = 12
    mt.batch_strong = 6
    mt.num_epochs = 100
    mt.steps_per_epoch = 0  # 0: one pass over the largest part of the mix
    mt.learning_rate = 1e-3
    mt.learning_rates = ()  # with num_runs = K: K rates, one per run (else learning_rate)
    mt.adam_b1 = 0.9
    mt.adam_b2 = 0.999
    mt.adam_eps = 1e-8
    mt.bce_eps = 1e-7
    mt.ema_decay = 0.999
    mt.consistency_weight = 2.0  # MSE between student and teacher, frames + clip
    mt.consistency_rampup = 0.5  # share of all steps over which the weight ramps up
    # share of all steps over which the learning rate ramps up the same way (DESED_task); 0: none
    mt.learning_rate_rampup = 0.0
    # 'sedjax': update k (from 1) reads both ramps at k - 1 (the first at exp(-5)) and the
    # teacher averages the weights update k made; 'desed_task': as SEDTask4 under Lightning
    # 1.9: the ramps read k, the first update runs at the full learning rate (ExponentialWarmup
    # sets the rate after it), the teacher averages the weights from before update k
    mt.step_timing = "sedjax"
    # of the weak (and strong) clips, held out for validation when the dataset has no
    # validation split (DCASE2018 layout); with one (DESED's), nothing is held out and the
    # checkpoint is picked on its event-based F1
    mt.val_fraction = 0.2
    mt.val_threshold = 0.5
    # what a validation split picks the checkpoint by: 'event_f1' (event-based macro F1 at
    # postprocess.threshold, the seed's metric) or 'psds1' (threshold-independent, DESED's)
    mt.checkpoint_metric = "event_f1"
    mt.early_stopping_patience = 15
    mt.early_stopping_min_delta = 0.01
    mt.early_stopping_start_epoch = 5
    mt.eval_batch_size = 128
    mt.predict_with = "teacher"  # 'teacher' (EMA weights) or 'student'

    mt.augment = a = ml_collections.ConfigDict()  # on the device, inside the step
    a.mixup_share = 0.0  # share of steps whose clips are mixed with a same-kind partner
    a.mixup_alpha = 0.2  # lambda ~ Beta(alpha, alpha), max(lambda, 1 - lambda)
    a.time_mask = 0  # widest time mask, input frames (student only, unless mask_teacher)
    a.freq_mask = 0  # widest frequency mask, mel bands (student only, unless mask_teacher)
    a.mask_teacher = False  # True: the teacher's input gets masks of its own (DESED_task)
    a.time_shift = 0  # largest roll either way, input frames (labels move with it)
    return c


def add_augmentation(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Turns on the on-device augmentation of the DESED_task recipes, sized for 10 s clips.

    Mixup (soft labels) on half of the steps, one time mask of up to 0.5 s and one frequency
    mask of up to 8 of the 64 mel bands on the student's input, and a random roll of up to 1 s
    that moves strong labels with the audio (a multiple of the model's x4 time pooling).
    """
    a = c.mean_teacher.augment
    a.mixup_share, a.mixup_alpha = 0.5, 0.2
    a.time_mask, a.freq_mask = 25, 8
    a.time_shift = 48
    return c


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The seed's config with the mean-teacher recipe; `configs/mean_teacher.py:augment` adds
    augmentation."""
    return with_variant(add_mean_teacher(baseline.get_config()), variant)


def with_variant(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """Applies the variant named after a config file's colon ('' or 'augment')."""
    if variant == "augment":
        return add_augmentation(c)
    if variant:
        raise ValueError(f"unknown config variant {variant!r}: use '' or 'augment'")
    return c
