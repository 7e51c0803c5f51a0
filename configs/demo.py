"""The baseline on synthetic soundscapes, sized to finish in minutes on a 2-core laptop CPU."""

from configs import baseline


def get_config():
    """Baseline values except dataset, sizes and epochs."""
    c = baseline.get_config()
    c.data.dataset = "synthetic"
    c.data.root = ""  # generated into <workdir>/synthetic
    c.data.synthetic.num_weak = 250
    c.data.synthetic.num_unlabeled = 400
    c.data.synthetic.num_test = 100
    c.pass1.num_epochs = 15
    c.pass1.early_stopping_patience = 5
    c.pass2.num_epochs = 6
    c.pass2.batch_size = 32
    c.pass2.early_stopping_patience = 3
    return c
