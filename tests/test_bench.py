"""The speed bench: PyTorch reference size, and a tiny end-to-end run with and without torch
(and its runs-per-program line)."""

import json
import sys

import jax
import numpy as np
import pytest
from absl import flags

from configs import baseline
from sedjax import bench
from sedjax.models import crnn

TINY = ["bench", "--batch_sizes=4", "--steps=1", "--warmup=1", "--repeats=1",
        "--logmel_clips=2", "--skip_pipeline", "--runs=1,2", "--runs_batch_size=4"]


def flax_param_count() -> int:
    model = crnn.from_config(baseline.get_config().model, len(baseline.CLASSES))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               np.zeros((1, 500, 64), np.float32)))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


def test_torch_model_matches_flax_size():
    pytest.importorskip("torch")
    from sedjax.models import torch_reference
    model = torch_reference.build_model()
    ours, theirs = flax_param_count(), torch_reference.count_params(model)
    assert abs(theirs - ours) / ours < 0.01, (ours, theirs)
    import torch
    assert model(torch.zeros(2, 50, 64)).shape == (2, 50, 10)  # frame outputs
    step = torch_reference.train_step_fn(model, torch_reference.make_optimizer(model))
    assert np.isfinite(float(step(torch.randn(2, 50, 64), torch.ones(2, 10))))


def run_tiny(tmp_path, *extra):
    fv = flags.FlagValues()
    bench.define_flags(fv)
    out = tmp_path / "bench.json"
    fv([*TINY, f"--json={out}", *extra])
    returned = bench.run_with_flags(fv)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    return written


def check_common(result):
    assert result["backend"] == "cpu" and result["device_count"] == 4
    assert isinstance(result["device_kind"], str)
    assert result["logmel_speedup_vs_librosa"] > 0
    assert result["logmel_speedup_vs_librosa_all_cores"] > 0
    assert result["logmel"]["max_abs_diff"] < 1e-4
    assert result["pipeline"] is None


def test_bench_tiny_end_to_end(tmp_path, capsys):
    result = run_tiny(tmp_path)
    check_common(result)
    assert result["train_step_clips_per_s"]["4"]["sedjax"] > 0
    assert result["params"]["sedjax"] == flax_param_count()
    out = capsys.readouterr().out
    assert "sedjax/torch" in out and "max |jnp - librosa|" in out
    runs = result["runs_per_program"]
    assert runs["batch_size_per_run"] == 4 and list(runs["clips_per_s"]) == ["1", "2"]
    assert all(runs["clips_per_s"][k] > 0 and runs["speedup_vs_separate"][k] > 0
               for k in ("1", "2"))
    assert "runs per program" in out
    if result["versions"]["torch"] is None:  # torch absent here: the ratio is null
        assert result["train_step_speedup_vs_torch"] is None
    else:
        assert result["train_step_speedup_vs_torch"] > 0
        assert result["train_step_speedup_vs_torch_by_batch_size"]["4"] > 0
        assert result["train_step_clips_per_s"]["4"]["torch"] > 0


def test_bench_without_torch(tmp_path, monkeypatch, capsys):
    """Torch made unimportable; the slow measurements stubbed (the run above does them)."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.setattr(bench, "sedjax_train_throughput", lambda *args: (10.0, 125834))
    monkeypatch.setattr(bench, "runs_train_throughput",
                        lambda config, b, k, *args: 10.0 * (1.0 if k == 1 else 1.5 * k))
    rates = {"jax": 4.0, "librosa_serial": 2.0, "librosa_all_cores": 4.0}
    monkeypatch.setattr(bench, "logmel_bench", lambda *args: {
        "clips": 2, "batch_size": 2, "workers": 2, "clips_per_s": rates, "max_abs_diff": 0.0})
    result = run_tiny(tmp_path)
    check_common(result)
    assert result["train_step_speedup_vs_torch"] is None
    assert result["train_step_speedup_vs_torch_by_batch_size"] == {"4": None}
    assert result["versions"]["torch"] is None and result["params"]["torch"] is None
    assert result["logmel_speedup_vs_librosa"] == 2.0
    assert result["logmel_speedup_vs_librosa_all_cores"] == 1.0
    assert "torch not installed" in capsys.readouterr().out
    # K runs in one program against K one-run programs: the ratio of their clips/s
    assert result["runs_per_program"]["separate_clips_per_s"] == 10.0
    assert result["runs_per_program"]["speedup_vs_separate"] == {"1": 1.0, "2": 3.0}
