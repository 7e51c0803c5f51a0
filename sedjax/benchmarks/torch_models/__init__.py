"""PyTorch twins of sedjax's models, the speed references of `python -m sedjax.bench` (never
used for training): crnn.py (the seed's CRNN), desed_crnn.py (DESED_task's CRNN), and
training.py, the one train step and throughput measurement both share. Importing this package
imports no torch; its modules do."""
