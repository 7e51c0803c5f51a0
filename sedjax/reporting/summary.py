"""What a run reports, typed: a recipe's training summary, a run's results, the headline scores.

HEADLINE is the one list of headline scores that `sedjax.compare`, the K-run tables
(sedjax.reporting.run_tables) and each run's results.json share. The dataclasses write (and
read back) the JSON files a run leaves in its workdir: training.json and results.json.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Sequence

HEADLINE = {  # name in tables and K-run results -> where a split's results hold it
    "event_f1": ("event_based", "f_measure_macro"),
    "segment_f1": ("segment_based", "f_measure_macro"),
    "psds1": ("threshold_independent", "psds1"),
    "psds2": ("threshold_independent", "psds2"),
    "collar_f1_best": ("threshold_independent", "collar_f1_best_macro"),
}


def headline(results: dict) -> dict:
    """The HEADLINE scores of one split's results (None where undefined)."""
    return {name: results.get(section, {}).get(key) for name, (section, key) in HEADLINE.items()}


def summarize(values: Sequence[float | None]) -> dict:
    """mean, sample std (0 for one value), min and max of the defined values."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


@dataclasses.dataclass
class StageSummary:
    """One training stage of a run (e.g. 'pass1', 'mean_teacher'): its kept checkpoint."""

    best_score: float
    best_epoch: int  # 0-based
    extra: dict = dataclasses.field(default_factory=dict)  # e.g. pass 1's thresholds

    def to_json(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, **self.extra}

    @classmethod
    def from_json(cls, data: dict) -> "StageSummary":
        extra = {k: v for k, v in data.items() if k not in ("best_score", "best_epoch")}
        return cls(data["best_score"], data["best_epoch"], extra)


@dataclasses.dataclass
class TrainingSummary:
    """What a recipe reports of one run's training (training.json).

    stages: in training order, one per stage folder of the recipe; settings: choices that
    shaped the predicting model (e.g. {'predict_with': 'teacher'}); seed and learning_rates
    are filled in for runs of a K-run program.
    """

    recipe: str
    stages: dict[str, StageSummary]
    settings: dict = dataclasses.field(default_factory=dict)
    seed: int | None = None
    learning_rates: dict | None = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"recipe": self.recipe}
        if self.seed is not None:
            out["seed"] = self.seed
        if self.learning_rates:
            out["learning_rates"] = self.learning_rates
        return {**out, **{k: s.to_json() for k, s in self.stages.items()}, **self.settings}

    @classmethod
    def from_json(cls, data: dict, stages: Sequence[str]) -> "TrainingSummary":
        """Reads training.json of a recipe whose stage folders are `stages`."""
        rest = {k: v for k, v in data.items()
                if k not in ("recipe", "seed", "learning_rates", *stages)}
        return cls(data["recipe"], {k: StageSummary.from_json(data[k]) for k in stages},
                   rest, data.get("seed"), data.get("learning_rates"))


@dataclasses.dataclass
class RunResults:
    """One run's results.json: per scored split the sed_eval and threshold-independent scores,
    the post-processing used, the training summary, timings (sedjax.system.timings; the
    finished ones replace these once the run reported) and the device count."""

    splits: dict[str, dict]
    postprocess: dict
    training: TrainingSummary
    timings: dict
    devices: int

    def headline(self, split: str) -> dict:
        return headline(self.splits[split])

    def to_json(self) -> dict:
        return {**self.splits, "postprocess": self.postprocess, **self.training.to_json(),
                "timings": self.timings, "devices": self.devices}
