"""A handful of generated DESED-layout clips of 2 s and 2 short epochs: the DESED tests' config."""

from configs import demo_desed


def get_config(variant: str = ""):
    """demo_desed.py (DESED features, CRNN, mean teacher) at the smallest sizes."""
    c = demo_desed.get_config(variant)
    s = c.data.synthetic
    s.num_weak = s.num_unlabeled = s.num_strong = 8
    s.num_validation = s.num_test = 8
    c.data.clip_seconds = 2.0
    c.features.num_frames = 126  # 1 + 2 s * 16000 / 256
    mt = c.mean_teacher
    mt.batch_weak, mt.batch_unlabeled, mt.batch_strong = 4, 4, 4
    mt.num_epochs, mt.steps_per_epoch = 2, 2
    mt.eval_batch_size = c.runtime.predict_batch_size = 8
    return c
