"""The speed bench: PyTorch reference sizes (seed CRNN, DESED CRNN), XLA's flops against a hand
count, the roofline arithmetic, --full's values, and a tiny end-to-end run with and without
torch (every section, printed in order and row by row)."""

import json
import sys

import jax
import numpy as np
import pytest
from absl import flags

from configs import baseline, desed_baseline
from sedjax import bench
from sedjax import models
from sedjax.benchmarks import beats_encoder, logmel, runs_per_program, timing, train_step

TINY = ["bench", "--batch_sizes=4", "--steps=1", "--warmup=1", "--repeats=1",
        "--logmel_clips=2", "--skip_pipeline", "--runs=1,2", "--runs_batch_size=4",
        "--matmul_sizes=32,64", "--desed", "--desed_batch_sizes=4", "--desed_num_frames=32"]
SECTIONS = ["== environment", "== train step", "== roofline", "== DESED CRNN",
            "== runs per program", "== log-mel"]


def flax_param_count() -> int:
    model = models.from_config(baseline.get_config().model, len(baseline.CLASSES))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               np.zeros((1, 500, 64), np.float32)))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


def test_torch_model_matches_flax_size():
    pytest.importorskip("torch")
    from sedjax.benchmarks.torch_models import crnn, training
    model = crnn.build_model()
    ours, theirs = flax_param_count(), training.count_params(model)
    assert abs(theirs - ours) / ours < 0.01, (ours, theirs)
    import torch
    assert model(torch.zeros(2, 50, 64)).shape == (2, 50, 10)  # frame outputs
    step = training.train_step_fn(model, training.make_optimizer(model), crnn.frame_probs)
    assert np.isfinite(float(step(torch.randn(2, 50, 64), torch.ones(2, 10))))


def test_torch_desed_model_matches_flax_size():
    pytest.importorskip("torch")
    import torch
    from sedjax.benchmarks.torch_models import desed_crnn, training
    model = desed_crnn.build_model()
    flax_model = models.from_config(desed_baseline.get_config().model, 10)
    shapes = jax.eval_shape(lambda: flax_model.init(jax.random.PRNGKey(0),
                                                    np.zeros((1, 626, 128), np.float32)))
    ours = models.count_params(shapes["params"])
    assert training.count_params(model) == ours == 1_112_420
    strong, weak = model(torch.zeros(2, 626, 128))
    assert strong.shape == (2, 156, 10) and weak.shape == (2, 10)  # as the flax model's
    step = training.train_step_fn(model, training.make_optimizer(model), desed_crnn.frame_probs)
    assert np.isfinite(float(step(torch.randn(2, 64, 128), torch.ones(2, 10))))


def test_compiled_flops_equal_hand_count():
    """A dense (8, 16) x (16, 4) matmul is 2 * 8 * 16 * 4 flops; sharded over the 4 devices,
    each device's program does a quarter of them."""
    a, b = np.ones((8, 16), np.float32), np.ones((16, 4), np.float32)
    f = jax.jit(lambda x, y: x @ y)
    assert timing.compiled_flops(f.lower(a, b).compile()) == 2 * 8 * 16 * 4
    from jax.sharding import NamedSharding, PartitionSpec as P
    mesh = jax.make_mesh((4,), ("batch",))
    g = jax.jit(jax.shard_map(lambda x, y: x @ y, mesh=mesh, in_specs=(P("batch"), P()),
                              out_specs=P("batch")))
    sharded = (jax.device_put(a, NamedSharding(mesh, P("batch"))),
               jax.device_put(b, NamedSharding(mesh, P())))
    assert timing.compiled_flops(g.lower(*sharded).compile()) == 2 * 8 * 16 * 4 / 4


class FakeClock:
    """timing's `time` module with a perf_counter that advances by the given steps."""

    def __init__(self, steps):
        self.now, self.steps = 0.0, iter(steps)

    def perf_counter(self):
        self.now += next(self.steps)
        return self.now

    monotonic = perf_counter


def test_rate_is_the_timed_clips_over_the_median_time(monkeypatch):
    """timing.rate: one untimed call first (compilation), then `repeats` timed calls of `calls`
    steps; clips/s = clips per step x steps / the median of the timed calls."""
    calls = []
    # each read moves the clock on: 3 repeats (a read at the start, one at the end) of 2, 8 and
    # 4 s, 1 s apart
    monkeypatch.setattr(timing, "time", FakeClock([0.0, 2.0, 1.0, 8.0, 1.0, 4.0]))
    rate = timing.rate(calls.append, clips_per_call=4, calls=5, warmup=0, repeats=3)
    assert calls == [1, 5, 5, 5]  # max(warmup, 1) untimed, then 3 x 5 timed steps
    assert rate == 4 * 5 / 4.0  # 20 clips per repeat over the median 4 s


def test_matmul_gflops_and_roofline_arithmetic(monkeypatch):
    # 2 n^3 flops a call over the best time per call: each read moves the clock on by dt, so
    # the first call "takes" dt, min_seconds = 10 dt makes each timing 10 calls in dt
    dt = 2.0 ** -10  # exact in binary: no rounding in the clock's sums
    monkeypatch.setattr(timing, "time", FakeClock([dt] * 6))
    assert timing.matmul_gflops(64, min_seconds=10 * dt, repeats=2) == pytest.approx(
        2 * 64 ** 3 / (dt / 10) / 1e9, rel=1e-12)
    r = timing.roofline({"flops_per_step_per_device": 2e9, "seconds_per_step": 0.5},
                       {"1024": 8.0, "2048": 10.0})
    assert r["train_step_gflops_per_device"] == 4.0 and r["peak_matmul_gflops"] == 10.0
    assert r["ratio"] == pytest.approx(0.4)
    assert timing.roofline({"flops_per_step_per_device": None, "seconds_per_step": 1.0},
                          {"64": 1.0})["ratio"] is None


def test_full_profile_and_explicit_flags():
    fv = flags.FlagValues()
    bench.define_flags(fv)
    fv(["bench"])
    assert bench.resolved(fv, "batch_sizes") == ["16"] and not bench.resolved(fv, "pipeline")
    fv = flags.FlagValues()
    bench.define_flags(fv)
    fv(["bench", "--full", "--steps=5"])
    assert bench.resolved(fv, "batch_sizes") == ["32", "128"]
    assert bench.resolved(fv, "runs") == ["1", "4", "8"]
    assert bench.resolved(fv, "pipeline") and bench.resolved(fv, "desed")
    assert bench.resolved(fv, "steps") == 5  # given explicitly: wins over --full


def run_tiny(tmp_path, *extra):
    fv = flags.FlagValues()
    bench.define_flags(fv)
    out = tmp_path / "bench.json"
    fv([*TINY, f"--json={out}", *extra])
    returned = bench.run_with_flags(fv)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    return written


def check_common(result, out: str):
    """What both runs share; `out`: what was printed."""
    assert result["backend"] == "cpu" and result["device_count"] == 4
    assert isinstance(result["device_kind"], str)
    rates = result["logmel"]["clips_per_s"]
    # the ratios are the rates divided, and printed beside them as written
    serial = result["logmel_speedup_vs_librosa"]
    assert serial == rates["jax"] / rates["librosa_serial"]
    all_cores = result["logmel_speedup_vs_librosa_all_cores"]
    assert all_cores == rates["jax"] / rates["librosa_all_cores"]
    assert (f" {'librosa, 1 process':<34} {rates['librosa_serial']:>9.1f}   "
            f"jnp/librosa {serial:.2f}x") in out
    assert f"{rates['librosa_all_cores']:>9.1f}   jnp/librosa {all_cores:.2f}x" in out
    assert result["logmel"]["max_abs_diff"] < 1e-4
    assert result["pipeline"] is None


def check_order(out: str):
    at = [out.index(s) for s in SECTIONS]
    assert at == sorted(at), out


def test_bench_tiny_end_to_end(tmp_path, capsys, monkeypatch):
    timed = []  # every clips/s timing.rate measured: (clips per step, steps, clips/s)

    def rate(run, clips_per_call, calls, warmup, repeats):
        r = real_rate(run, clips_per_call, calls, warmup, repeats)
        timed.append((clips_per_call, calls, r))
        return r
    real_rate = timing.rate
    monkeypatch.setattr(timing, "rate", rate)
    result = run_tiny(tmp_path)
    out = capsys.readouterr().out
    check_common(result, out)
    check_order(out)
    # in order: the train step (batch 4), the DESED step (batch 4), the runs' one-run program
    # (4 clips a run) and K = 1, 2 runs (4 clips each), log-mel (2 clips a call); one step each
    assert [t[:2] for t in timed] == [(4, 1), (4, 1), (4, 1), (4, 1), (8, 1), (2, 1)]
    train, desed_rate, separate, one_run, two_runs, logmel = [t[2] for t in timed]
    assert result["train_step_clips_per_s"]["4"]["sedjax"] == train
    assert result["params"]["sedjax"] == flax_param_count()
    assert f"\n      4 {train:>10.1f} " in out
    roof = result["roofline"]
    assert set(roof["matmul_gflops"]) == {"32", "64"}
    assert roof["peak_matmul_gflops"] == max(roof["matmul_gflops"].values())
    # XLA's flops of the step: more than the forward convolutions alone (2 x 9 x T x F_in x
    # C_in x C_out per clip and block), the batch split over 4 devices
    forward_conv = 2 * 9 * 500 * (64 * 1 * 64 + 16 * 64 * 64 + 4 * 64 * 64) * 4 / 4
    assert roof["train_step_flops_per_device"] > forward_conv
    # the roofline: the step's flops over its time (4 clips at the measured clips/s), against
    # the best matmul, printed as computed
    assert roof["seconds_per_step"] == 4 / train
    gflops = roof["train_step_flops_per_device"] / roof["seconds_per_step"] / 1e9
    assert roof["train_step_gflops_per_device"] == pytest.approx(gflops, rel=1e-12)
    assert roof["ratio"] == pytest.approx(gflops / roof["peak_matmul_gflops"], rel=1e-12)
    assert (f"roofline: train step {gflops:.1f} GFLOP/s = {100 * roof['ratio']:.1f} % of the "
            f"best matmul {roof['peak_matmul_gflops']:.1f} GFLOP/s") in out
    desed = result["desed"]
    assert desed["num_frames"] == 32 and desed["n_mels"] == 128
    assert desed["params"]["sedjax"] == 1_112_420
    assert desed["clips_per_s"]["4"]["sedjax"] == desed_rate
    assert f"\n      4 {desed_rate:>10.1f} " in out[out.index("== DESED CRNN"):]
    assert "sedjax/torch" in out and "max |jnp - librosa|" in out
    assert result["logmel"]["clips_per_s"]["jax"] == logmel
    # K runs in one program against K one-run programs: the ratio of their clips/s
    runs = result["runs_per_program"]
    assert runs["batch_size_per_run"] == 4 and list(runs["clips_per_s"]) == ["1", "2"]
    assert runs["separate_clips_per_s"] == separate
    assert runs["clips_per_s"] == {"1": one_run, "2": two_runs}
    assert runs["speedup_vs_separate"] == {"1": one_run / separate, "2": two_runs / separate}
    assert f" one-run program: {separate:.1f}\n" in out
    for k, r in (("1", one_run), ("2", two_runs)):
        assert f" {k:>6} {r:>12.1f} {separate:>11.1f} {r / separate:>6.2f}x" in out
    speedups = result["train_step_speedup_vs_torch_by_batch_size"]
    if result["versions"]["torch"] is None:  # torch absent here: the ratio is null
        assert result["train_step_speedup_vs_torch"] is None and speedups == {"4": None}
    else:
        torch_rate = result["train_step_clips_per_s"]["4"]["torch"]
        assert result["train_step_speedup_vs_torch"] == speedups["4"] == train / torch_rate
        assert f"\n      4 {train:>10.1f} {torch_rate:>10.1f} {train / torch_rate:>12.2f}x" in out
        assert desed["params"]["torch"] == 1_112_420
        assert result["desed_train_step_speedup_vs_torch"] == (
            desed_rate / desed["clips_per_s"]["4"]["torch"])


def test_bench_without_torch(tmp_path, monkeypatch, capsys):
    """Torch made unimportable; the slow measurements stubbed (the run above does them)."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    printed, chunks = {}, []  # what was printed when each train step was first measured

    def step(config, b, *args):
        chunks.append(capsys.readouterr().out)
        printed.setdefault((config.model.arch, b), "".join(chunks))
        return {"clips_per_s": 10.0, "params": 125834, "seconds_per_step": b / 10.0,
                "flops_per_step_per_device": 1e9, "devices": 4}
    monkeypatch.setattr(train_step, "sedjax_train_step", step)
    monkeypatch.setattr(timing, "matmul_gflops", lambda n, dtype: n / 8.0)
    monkeypatch.setattr(runs_per_program, "runs_train_throughput",
                        lambda config, b, k, *args: 10.0 * (1.0 if k == 1 else 1.5 * k))
    rates = {"jax": 4.0, "librosa_serial": 2.0, "librosa_all_cores": 4.0}
    def logmel_bench(*args, on_rate):
        for key, rate in rates.items():
            on_rate(key, rate)
        return {"clips": 2, "batch_size": 2, "workers": 2, "clips_per_s": rates,
                "max_abs_diff": 0.0}
    monkeypatch.setattr(logmel, "logmel_bench", logmel_bench)
    result = run_tiny(tmp_path, "--batch_sizes=4,8")
    out = "".join(chunks) + capsys.readouterr().out
    check_common(result, out)
    assert result["train_step_speedup_vs_torch"] is None
    assert result["train_step_speedup_vs_torch_by_batch_size"] == {"4": None, "8": None}
    # rows printed as measured: batch 4's row is out before batch 8 is measured
    assert "== train step" in printed[("crnn", 4)] and "      4" not in printed[("crnn", 4)]
    assert "\n      4       10.0" in printed[("crnn", 8)]
    # the roofline: 1 GFLOP per step at 0.4 s per step (batch 4 at 10 clips/s), best matmul 8
    assert result["roofline"]["train_step_gflops_per_device"] == pytest.approx(2.5)
    assert result["roofline"]["peak_matmul_gflops"] == 8.0
    assert result["roofline"]["ratio"] == pytest.approx(2.5 / 8.0)
    assert result["desed"]["speedup"] == {"4": None}
    assert result["desed_train_step_speedup_vs_torch"] is None
    assert result["versions"]["torch"] is None and result["params"]["torch"] is None
    assert result["logmel_speedup_vs_librosa"] == 2.0
    assert result["logmel_speedup_vs_librosa_all_cores"] == 1.0
    check_order(out)
    assert "torch not installed" in out
    assert "librosa, 1 process                       2.0   jnp/librosa 2.00x" in out
    assert "roofline: train step 2.5 GFLOP/s = 31.2 % of the best matmul 8.0 GFLOP/s" in out
    # K runs in one program against K one-run programs: the ratio of their clips/s
    assert result["runs_per_program"]["separate_clips_per_s"] == 10.0
    assert result["runs_per_program"]["speedup_vs_separate"] == {"1": 1.0, "2": 3.0}


# ---------------------------------------------------------------------------- --beats
BEATS_TINY = ["bench", "--beats", "--beats_size=tiny", "--beats_clips=2", "--beats_seconds=2",
              "--beats_repeats=2", "--warmup=1"]


def run_beats(tmp_path, *extra):
    fv = flags.FlagValues()
    bench.define_flags(fv)
    out = tmp_path / "beats.json"
    fv([*BEATS_TINY, f"--json={out}", *extra])
    returned = bench.run_with_flags(fv)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    return written


def beats_reference_or_skip():
    module, why = beats_encoder.beats_reference()
    if module is None:
        pytest.skip(f"the reference BEATs: {why}")
    return module


def timed_rates(monkeypatch) -> list:
    """Every timing.rate call's (clips per call, calls, warmup, repeats, clips/s)."""
    timed, real_rate = [], timing.rate

    def rate(run, clips_per_call, calls, warmup, repeats):
        r = real_rate(run, clips_per_call, calls, warmup, repeats)
        timed.append((clips_per_call, calls, warmup, repeats, r))
        return r
    monkeypatch.setattr(timing, "rate", rate)
    return timed


def test_beats_bench_against_the_reference(tmp_path, capsys, monkeypatch):
    """Both encoders (tiny, the same random weights) give the same embeddings of the bench's
    batch, then each is timed: two clips a call, 2 repeats after 1 warm-up; the ratio is
    sedjax's clips/s over the reference's, printed as computed."""
    beats_reference_or_skip()
    timed = timed_rates(monkeypatch)
    result = run_beats(tmp_path)
    out = capsys.readouterr().out
    b = result["beats"]
    assert (b["size"], b["layers"], b["width"], b["clips"], b["seconds"], b["dtype"]) == (
        "tiny", 2, 32, 2, 2.0, "float32")
    assert b["tokens"] == 12 * 8  # 198 fbank frames of 2 s: 12 patch rows x 8 band groups
    assert b["reference"].endswith("recipes/dcase2023_task4_baseline/local/beats")
    assert b["reference_note"] is None and b["torch_threads"] >= 1
    # the agreement checked before timing (float32)
    assert b["abs_diff_999"] <= beats_encoder.BEATS_TOL
    assert b["max_abs_diff"] <= beats_encoder.BEATS_TOL_MAX
    assert 0 < b["abs_diff_999"] <= b["max_abs_diff"]  # two computations, not one copied
    assert [t[:4] for t in timed] == [(2, 1, 1, 2), (2, 1, 1, 2)]  # sedjax, then torch
    ours, theirs = timed[0][4], timed[1][4]
    assert b["clips_per_s"] == {"sedjax": ours, "torch": theirs}
    assert b["speedup"] == result["beats_speedup_vs_torch"] == ours / theirs
    assert f" sedjax/torch {ours / theirs:.2f}x" in out
    assert f"{ours:>9.2f} clips/s" in out and f"{theirs:>9.2f} clips/s" in out
    assert out.index("max ") < out.index("sedjax (jax.jit)")  # checked, then timed
    assert "== train step" not in out  # --beats runs its section alone


def test_beats_bench_of_a_wrong_model_fails(monkeypatch):
    """One bias of the reference changed by 0.01 after loading (one channel: the same shift of
    every channel would vanish in the post-LN layer norm): the embeddings differ, the bench
    stops before timing anything."""
    beats_reference_or_skip()
    import torch
    real = beats_encoder.torch_beats

    def wrong(module, config, params):
        model = real(module, config, params)
        with torch.no_grad():
            model.encoder.layers[1].fc2.bias[0] += 0.01
        return model
    monkeypatch.setattr(beats_encoder, "torch_beats", wrong)
    timed = timed_rates(monkeypatch)
    with pytest.raises(beats_encoder.BeatsMismatchError, match="not the same model"):
        beats_encoder.beats_bench(2, 2.0, "tiny", repeats=1)
    assert timed == []


def test_beats_bench_without_the_reference(tmp_path, capsys, monkeypatch):
    """No checkout named: sedjax's side alone, one line saying why; no torch: the same."""
    monkeypatch.delenv("SEDJAX_DESED_TASK", raising=False)
    timed = timed_rates(monkeypatch)
    result = run_beats(tmp_path)
    out = capsys.readouterr().out
    b = result["beats"]
    assert b["clips_per_s"]["torch"] is None and b["speedup"] is None
    assert b["max_abs_diff"] is None and result["beats_speedup_vs_torch"] is None
    assert b["clips_per_s"]["sedjax"] == timed[0][4] and len(timed) == 1
    assert b["reference_note"].startswith("SEDJAX_DESED_TASK is not set")
    assert [line for line in out.splitlines() if "reference" in line] == [
        f" reference: none, {b['reference_note']}: sedjax alone"]
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    module, why = beats_encoder.beats_reference(str(tmp_path))
    assert module is None and why.endswith("no recipes/dcase2023_task4_baseline/local/beats/"
                                           "BEATs.py")
    beats_dir = tmp_path / "recipes" / "dcase2023_task4_baseline" / "local" / "beats"
    beats_dir.mkdir(parents=True)
    (beats_dir / "BEATs.py").write_text("")
    assert beats_encoder.beats_reference(str(tmp_path)) == (
        None, "torch is not installed (pip install -e '.[reference]')")


def test_beats_bench_is_float32():
    fv = flags.FlagValues()
    bench.define_flags(fv)
    fv([*BEATS_TINY, "--dtype=bfloat16"])
    from sedjax.system import cli
    with pytest.raises(cli.UserError, match="--beats times float32"):
        bench.run_with_flags(fv)
