"""What a sedjax process needs from its machine: devices and the mesh (sharding.py), processes
(distributed.py), the allocator (host.py), atomic files (files.py), signals (preemption.py), the
workdir lock, the compilation cache, XLA flags, timings and the one user-error helper (cli.py)."""
