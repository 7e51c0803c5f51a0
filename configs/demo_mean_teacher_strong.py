"""Mean teacher on the demo's synthetic data plus strongly labelled clips (the 2019 setting)."""

from configs import demo_mean_teacher


def get_config():
    """demo_mean_teacher.py with 300 strongly labelled synthetic clips in every batch's mix."""
    c = demo_mean_teacher.get_config()
    c.data.synthetic.num_strong = 300
    c.data.use_strong = True
    mt = c.mean_teacher
    mt.batch_weak, mt.batch_unlabeled, mt.batch_strong = 8, 8, 8
    return c
