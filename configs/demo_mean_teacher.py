"""Mean teacher on the demo's synthetic data, weak + unlabeled clips only (the 2018 setting).

The same data, features, CPU budget and post-processing as configs/demo.py; the system is
configs/mean_teacher.py's (attention pooling, x4 time pooling, student + EMA teacher).
"""

from configs import demo, mean_teacher


def get_config():
    """demo.py's data with the mean-teacher recipe, sized for minutes on a 2-core CPU."""
    c = mean_teacher.add_mean_teacher(demo.get_config())
    mt = c.mean_teacher
    mt.batch_weak, mt.batch_unlabeled, mt.batch_strong = 12, 12, 0
    mt.num_epochs = 30
    mt.steps_per_epoch = 0  # one pass over the 400 training weak clips: 34 steps
    mt.learning_rate = 3e-3  # few steps (as demo.py's pass 1)
    mt.early_stopping_patience = 10
    return c
