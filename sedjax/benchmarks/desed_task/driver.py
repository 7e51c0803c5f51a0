"""Runs DESED_task's 2023 recipe as it is: its own train_sed.py (prepare_run, single_run), data
loaders and SEDTask4, from a checkout that is not modified. The harness starts it as

    python -m sedjax.benchmarks.desed_task.driver --desed_task CHECKOUT --conf CONF.yaml
        --log_dir DIR --out DIR --classes '["Cat", ...]' --seed K [--limit_train_batches N]
        [--strong_real]

What the driver adds, without editing a file of the checkout:
- the class list: local.classes_dict.classes_labels (an OrderedDict that train_sed.py imports
  by name) is refilled in place before train_sed.py is imported, so its encoder and every other
  holder of that dict see the folder's classes;
- the seed: pl.seed_everything(seed) before single_run, which itself skips seeding for seed 0
  (`if seed:`);
- pl.Trainer gets limit_train_batches (sedjax's steps per epoch) and one more callback, which
  times each epoch (training, validation) and counts its batches;
- after trainer.test (single_run tests the best checkpoint: ModelCheckpoint on val/obj_metric),
  the test step's score buffers (student and teacher, raw and median-filtered as its
  post-processing does) are written with sed_scores_eval.io.write_sed_scores to
  OUT/scores/{student,teacher}/{raw,postprocessed}/ (the recipe itself writes the
  median-filtered ones it scores PSDS on, <log dir>/version_N/metrics_test/<model>/scenario1/
  scores/, but never the raw ones), and OUT/driver.json gets the timings, the test step's
  logged metrics and the best checkpoint's path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

RECIPE = "recipes/dcase2023_task4_baseline"


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _timer_callback(pl, record: dict):
    """A Lightning callback filling record['epochs'] (train_s, validate_s, epoch_s, steps)."""

    class EpochTimer(pl.Callback):
        def on_train_start(self, trainer, module):
            record["train_start"] = time.time()
            sched = getattr(module, "scheduler", None) or {}
            if isinstance(sched, dict) and "scheduler" in sched:
                record["rampup_steps"] = _number(getattr(sched["scheduler"], "rampup_len", None))
            record["num_training_batches"] = _number(trainer.num_training_batches)

        def on_train_epoch_start(self, trainer, module):
            self.t0, self.v0, self.v1, self.steps = time.perf_counter(), None, None, 0

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.steps += 1

        def on_validation_epoch_start(self, trainer, module):
            if trainer.state.fn == "fit":
                self.v0 = time.perf_counter()

        def on_validation_end(self, trainer, module):
            if trainer.state.fn == "fit":
                self.v1 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            end = time.perf_counter()
            v0 = self.v0 if self.v0 is not None else end
            v1 = self.v1 if self.v1 is not None else end
            record["epochs"].append({
                "epoch": trainer.current_epoch + 1, "steps": self.steps,
                "train_s": round(v0 - self.t0, 3), "validate_s": round(v1 - v0, 3),
                "epoch_s": round(end - self.t0, 3),
                "val_obj_metric": _number(trainer.callback_metrics.get("val/obj_metric"))})
            print(f"DESED_task epoch {trainer.current_epoch + 1}: {self.steps} steps, "
                  f"{end - self.t0:.1f} s (training {v0 - self.t0:.1f}, validation "
                  f"{v1 - v0:.1f})", flush=True)

        def on_test_start(self, trainer, module):
            self.test0 = time.perf_counter()

        def on_test_end(self, trainer, module):
            record["test_s"] = round(time.perf_counter() - self.test0, 3)

    return EpochTimer()


def write_scores(module, out: pathlib.Path) -> dict:
    """The test step's score buffers as sed_scores_eval tsv folders; {name: clip count}."""
    import sed_scores_eval

    written = {}
    for who in ("student", "teacher"):
        for kind in ("raw", "postprocessed"):
            scores = getattr(module, f"test_scores_{kind}_buffer_{who}")
            folder = out / "scores" / who / kind
            folder.mkdir(parents=True, exist_ok=True)
            sed_scores_eval.io.write_sed_scores(scores, str(folder))
            written[f"{who}/{kind}"] = len(scores)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--desed_task", required=True)
    p.add_argument("--conf", required=True)
    p.add_argument("--log_dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--classes", required=True, help="JSON list of the class labels")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--limit_train_batches", type=int, default=0)
    p.add_argument("--strong_real", action="store_true")
    args = p.parse_args(argv)
    start = time.time()
    checkout = pathlib.Path(args.desed_task).resolve()
    recipe = checkout / RECIPE
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.path[:0] = [str(recipe), str(checkout)]

    import local.classes_dict as classes_dict  # the recipe's; refilled before train_sed reads it

    classes = json.loads(args.classes)
    classes_dict.classes_labels.clear()
    classes_dict.classes_labels.update((c, i) for i, c in enumerate(classes))

    import pytorch_lightning as pl
    import train_sed

    record: dict = {"epochs": [], "classes": classes, "seed": args.seed,
                    "limit_train_batches": args.limit_train_batches or None}
    timer = _timer_callback(pl, record)
    init, test = pl.Trainer.__init__, pl.Trainer.test

    def patched_init(self, *a, **k):
        if args.limit_train_batches:
            k["limit_train_batches"] = args.limit_train_batches
        k["callbacks"] = [*(k.get("callbacks") or []), timer]
        init(self, *a, **k)

    def patched_test(self, model=None, *a, **k):
        result = test(self, model, *a, **k)
        callback = getattr(self, "checkpoint_callback", None)
        record["best_model_path"] = getattr(callback, "best_model_path", None) or None
        best = getattr(callback, "best_model_score", None)
        record["best_model_score"] = _number(best) if best is not None else None
        record["test_metrics"] = {k: _number(v) for r in (result or []) for k, v in r.items()}
        record["scores"] = write_scores(model, out)
        return result

    pl.Trainer.__init__, pl.Trainer.test = patched_init, patched_test
    argv_run = ["--conf_file", args.conf, "--log_dir", args.log_dir, "--gpus", "0"]
    if args.strong_real:
        argv_run.append("--strong_real")
    configs, a, test_state_dict, evaluation = train_sed.prepare_run(argv_run)
    pl.seed_everything(args.seed, workers=True)
    train_sed.single_run(configs, a.log_dir, a.gpus, a.strong_real, a.resume_from_checkpoint,
                         test_state_dict, a.fast_dev_run, evaluation)
    record["total_s"] = round(time.time() - start, 3)
    tmp = out / "driver.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out / "driver.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
