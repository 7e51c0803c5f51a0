"""sedjax beside DCASE-REPO/DESED_task's 2023 baseline on the same DESED-layout data:
`python -m sedjax.benchmarks.desed_task --help` (__main__.py says what it runs and measures).

Modules: layout (where a DESED-layout folder keeps what each system reads), conf (DESED_task's
default.yaml rewritten from a sedjax config), driver (runs DESED_task's train_sed.py as it is,
in its own process: the one module here that imports torch and DESED_task), process (a measured
subprocess), scoring (both systems' test scores by one code path), table (side_by_side.json and
the markdown table), harness (the runs), convert_check (DESED_task's checkpoint scored by
sedjax after `python -m sedjax.convert desed_task`).
"""
