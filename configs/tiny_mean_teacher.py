"""A handful of synthetic clips (with a strong split) and 2 epochs of mean teacher: for tests."""

from configs import mean_teacher, tiny


def get_config():
    """tiny.py's sizes with the mean-teacher recipe and every augmentation on."""
    c = mean_teacher.add_mean_teacher(tiny.get_config())
    c.data.synthetic.num_strong = 12
    mt = c.mean_teacher
    mt.batch_weak, mt.batch_unlabeled, mt.batch_strong = 4, 2, 2
    mt.num_epochs = 2
    mt.eval_batch_size = 8
    a = mt.augment
    a.mixup_share, a.time_mask, a.freq_mask, a.time_shift = 0.5, 20, 8, 40
    return c
