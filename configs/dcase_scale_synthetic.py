"""The baseline at the real DCASE2018 set's scale, on synthetic soundscapes (accelerator runs).

1,578 weak + 14,412 unlabeled + 288 test clips (the synthetic defaults in baseline.py) and the
baseline's epochs and early stopping: the workload the seed took 8 h for on a GTX 1080 Ti.
"""

from configs import baseline


def get_config():
    """Baseline values; only the dataset is switched to synthetic."""
    c = baseline.get_config()
    c.data.dataset = "synthetic"
    c.data.root = ""  # generated into <workdir>/synthetic
    return c
