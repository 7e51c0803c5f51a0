"""Benchmarks: what sedjax's speed is, alone and against other systems. The machinery of the
commands `python -m sedjax.bench` (speed_report.py: train_step.py, runs_per_program.py,
timing.py, logmel.py, beats_encoder.py) and `python -m sedjax.device_check` (device_report.py:
device_sections.py, device_pipeline.py), the PyTorch twins of sedjax's models they time
(torch_models/), and desed_task/, sedjax and DESED_task trained side by side.

Unlike the rest of sedjax, these modules may import the other systems' code (torch,
DESED_task); nothing outside sedjax/benchmarks/ imports them but those two commands."""
