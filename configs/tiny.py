"""A handful of synthetic clips and 1-2 epochs: the end-to-end test's config (seconds)."""

from configs import demo


def get_config():
    """Demo with the smallest sizes that still exercise every stage."""
    c = demo.get_config()
    c.data.synthetic.num_weak = 20
    c.data.synthetic.num_unlabeled = 16
    c.data.synthetic.num_test = 8
    c.data.synthetic.num_validation = 8
    c.pass1.num_epochs = 2
    c.pass1.batch_size = 8
    c.pass2.num_epochs = 1
    c.pass2.batch_size = 8
    c.pass1.eval_batch_size = c.pass2.eval_batch_size = c.runtime.predict_batch_size = 8
    return c
