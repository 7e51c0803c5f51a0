"""Tests of sedjax.metrics.psds (threshold-independent scores via sed_scores_eval), its inputs
(sedjax.metrics.sed_scores_inputs) and its CLI options."""

import json

import numpy as np
import pytest

pytest.importorskip("sed_scores_eval")

from sed_scores_eval import collar_based, intersection_based  # noqa: E402
from sed_scores_eval.base_modules.scores import create_score_dataframe  # noqa: E402

from sedjax import evaluate
from sedjax.data import event_files
from sedjax.metrics import postprocess, psds, sed_scores_inputs
from sedjax.reporting import outputs  # noqa: E402

CLASSES = ["Cat", "Dog", "Speech"]
FRAME = 0.05
T = 200  # 10 s clips


def random_case(seed, num_files=16, short=()):
    """Reference events (non-overlapping per class, inside each clip's valid part) and noisy
    frame probabilities that follow them, so that PSDS is neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    files = [f"clip_{i:02d}.wav" for i in range(num_files)]
    valid = np.full(num_files, T)
    for i in short:
        valid[i] = T - 37 - 11 * i
    truth = np.zeros((num_files, T, len(CLASSES)))
    events = []
    for i, name in enumerate(files):
        for c, label in enumerate(CLASSES):
            start = 0
            for _ in range(rng.integers(0, 3)):
                on = start + int(rng.integers(0, 40))
                off = on + int(rng.integers(4, 50))
                if off > valid[i]:
                    break
                truth[i, on:off, c] = 1
                # reference times off the frame grid (by up to half a frame)
                events.append({"filename": name, "event_label": label,
                               "onset": round(max(on * FRAME + rng.uniform(-.025, .025), 0), 3),
                               "offset": round(off * FRAME + rng.uniform(-.025, .025), 3)})
                start = off + 2
    # temporally smooth noise (a moving average over 9 frames), so that detections are runs
    noise = rng.standard_normal((num_files, T + 8, len(CLASSES)))
    noise = np.stack([noise[:, k: k + T] for k in range(9)]).sum(0) / 3.0
    probs = np.clip(0.4 + 0.3 * truth + 0.09 * noise, 0, 1)
    # padding past a short clip's end: values that would count if it were scored
    for i in short:
        probs[i, valid[i]:] = 1.0
    return files, probs.astype(np.float32), events, valid


def direct(files, probs, events, valid, durations):
    """sed_scores_eval called on its own: score tables, ground truth and durations by hand."""
    key = {f: f[: -len(".wav")] for f in files}
    scores = {
        key[f]: create_score_dataframe(p[:n].astype(np.float64), np.arange(n + 1) * FRAME,
                                       CLASSES)
        for f, p, n in zip(files, probs, valid)
    }
    gt = {key[f]: [] for f in files}
    for e in events:
        gt[key[e["filename"]]].append((e["onset"], e["offset"], e["event_label"]))
    durs = {key[f]: durations[f] for f in files}
    p1 = intersection_based.psds(scores=scores, ground_truth=gt, audio_durations=durs,
                                 dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None,
                                 alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0)
    p2 = intersection_based.psds(scores=scores, ground_truth=gt, audio_durations=durs,
                                 dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3,
                                 alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0)
    f = collar_based.best_fscore(scores=scores, ground_truth=gt, onset_collar=0.2,
                                 offset_collar=0.2, offset_collar_rate=0.2)
    return p1, p2, f


@pytest.mark.parametrize("short", [(), (1, 4)])
def test_equals_sed_scores_eval_called_directly(short):
    files, probs, events, valid = random_case(1, short=short)
    durations = {f: 10.0 for f in files}
    figures, curves = psds.threshold_independent(
        probs, files, FRAME, CLASSES, events, durations, num_valid_frames=valid)
    p1, p2, (f, p, r, thresholds, _) = direct(files, probs, events, valid, durations)

    assert 0.05 < figures["psds1"] < 0.95 and 0.05 < figures["psds2"] < 0.95  # not trivial
    assert figures["psds1"] == pytest.approx(p1[0], abs=1e-12)
    assert figures["psds2"] == pytest.approx(p2[0], abs=1e-12)
    assert figures["collar_f1_best_macro"] == pytest.approx(f["macro_average"], abs=1e-12)
    assert 0.05 < figures["collar_f1_best_macro"] < 0.95
    for label in CLASSES:
        cw = figures["collar_best"]["class_wise"][label]
        assert cw["f_measure"] == pytest.approx(f[label], abs=1e-12)
        assert cw["precision"] == pytest.approx(p[label], abs=1e-12)
        assert cw["recall"] == pytest.approx(r[label], abs=1e-12)
        assert cw["threshold"] == pytest.approx(thresholds[label], abs=1e-12)
        assert figures["psds_detail"]["psds1"]["class_wise"][label] == pytest.approx(
            p1[1][label], abs=1e-12)
    np.testing.assert_array_equal(curves["psds1"]["etpr"], p1[2][0])
    np.testing.assert_array_equal(curves["psds1"]["efpr"], p1[2][1])
    np.testing.assert_array_equal(curves["psds2"]["class_wise"]["Dog"]["tpr"], p2[3]["Dog"][0])
    assert figures["num_files"] == len(files)
    assert figures["num_reference_events"] == len(events)
    assert figures["dataset_seconds"] == pytest.approx(10.0 * len(files))
    json.dumps(figures, allow_nan=False)  # JSON-ready; the curves are kept apart


def test_perfect_detector_scores_one():
    rng = np.random.default_rng(3)
    files = [f"p{i}.wav" for i in range(12)]
    probs = np.zeros((len(files), T, len(CLASSES)))
    events = []
    for i, name in enumerate(files):
        for c, label in enumerate(CLASSES):
            if (i + c) % 2:
                continue
            on = int(rng.integers(0, 120))
            off = on + int(rng.integers(5, 80))
            probs[i, on:off, c] = 1.0
            events.append({"filename": name, "onset": on * FRAME, "offset": off * FRAME,
                           "event_label": label})
    figures, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events,
                                            {f: T * FRAME for f in files})
    assert figures["psds1"] == pytest.approx(1.0, abs=1e-6)
    assert figures["psds2"] == pytest.approx(1.0, abs=1e-6)
    assert figures["collar_f1_best_macro"] == 1.0
    assert all(v["f_measure"] == 1.0 for v in figures["collar_best"]["class_wise"].values())


def test_classes_without_reference_events_are_left_out_and_listed():
    files, probs, events, valid = random_case(5, num_files=10)
    no_speech = [e for e in events if e["event_label"] != "Speech"]
    figures, curves = psds.threshold_independent(probs, files, FRAME, CLASSES, no_speech)
    assert figures["classes_without_reference_events"] == ["Speech"]
    assert set(figures["collar_best"]["class_wise"]) == {"Cat", "Dog"}
    two, _ = psds.threshold_independent(probs[..., :2], files, FRAME, CLASSES[:2], no_speech)
    for key in ("psds1", "psds2", "collar_f1_best_macro"):
        assert figures[key] == pytest.approx(two[key]), key  # scored over Cat and Dog only
    empty, curves = psds.threshold_independent(probs, files, FRAME, CLASSES, [])
    assert empty["psds1"] is None and empty["collar_f1_best_macro"] is None and curves == {}


def test_padding_beyond_valid_frames_is_ignored():
    files, probs, events, valid = random_case(1, num_files=8, short=(0, 2, 5))
    tables = sed_scores_inputs.score_dataframes(probs, files, FRAME, CLASSES, valid)
    assert list(tables) == [f[:-4] for f in files]  # audio ids: no extension
    for (key, table), n in zip(tables.items(), valid):
        assert len(table) == n
        assert table["onset"].iloc[0] == 0 and table["offset"].iloc[-1] == pytest.approx(n * FRAME)
        assert list(table.columns) == ["onset", "offset", *CLASSES]
    zero_padded = probs.copy()
    for i, n in enumerate(valid):
        zero_padded[i, n:] = 0
    a, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events,
                                      num_valid_frames=valid)
    b, _ = psds.threshold_independent(zero_padded, files, FRAME, CLASSES, events,
                                      num_valid_frames=valid)
    assert a == b
    # durations default to the valid frames' length
    assert a["dataset_seconds"] == pytest.approx(float(valid.sum()) * FRAME)
    # and scoring the padding as audio changes the figures
    c, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events,
                                      {f: T * FRAME for f in files})
    assert c["collar_best"] != a["collar_best"]


def test_median_filter_is_applied_to_the_valid_frames():
    files, probs, events, valid = random_case(7, num_files=6, short=(2,))
    filtered = probs.copy()
    for i, n in enumerate(valid):
        filtered[i, :n] = postprocess.median_filter(probs[i, :n], (5, 9, 1))
    a, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events,
                                      num_valid_frames=valid, median_filter=(5, 9, 1))
    b, _ = psds.threshold_independent(filtered, files, FRAME, CLASSES, events,
                                      num_valid_frames=valid)
    assert a["median_filter"] == [5, 9, 1] and b["median_filter"] is None
    assert {k: v for k, v in a.items() if k != "median_filter"} == \
        {k: v for k, v in b.items() if k != "median_filter"}
    assert "median-filtered over [5, 9, 1] frames" in psds.format_lines(a)


def test_ground_truth_merges_connected_events_and_keeps_empty_clips():
    ev = [{"filename": "a.wav", "onset": 1.0, "offset": 2.0, "event_label": "Cat"},
          {"filename": "a.wav", "onset": 2.0, "offset": 3.0, "event_label": "Cat"},
          {"filename": "a.wav", "onset": 2.5, "offset": 4.0, "event_label": "Cat"},
          {"filename": "a.wav", "onset": 1.5, "offset": 2.5, "event_label": "Dog"}]
    gt = sed_scores_inputs.ground_truth(ev, ["a.wav", "b.wav"], CLASSES)
    assert gt == {"a": [(1.0, 4.0, "Cat"), (1.5, 2.5, "Dog")], "b": []}
    with pytest.raises(ValueError, match="not in the scored files"):
        sed_scores_inputs.ground_truth(ev, ["b.wav"], CLASSES)
    with pytest.raises(ValueError, match="not a known class"):
        sed_scores_inputs.ground_truth(ev, ["a.wav"], ["Cat"])
    with pytest.raises(ValueError, match="share the audio id"):
        sed_scores_inputs.score_dataframes(np.zeros((2, 4, 3)), ["x.wav", "x.flac"], FRAME, CLASSES)


def test_settings_defaults_and_overrides():
    s = psds.Settings()
    assert s.psds["psds1"] == psds.PSDSSettings(0.7, 0.7, None, 0.0, 1.0, 100.0)
    assert s.psds["psds2"] == psds.PSDSSettings(0.1, 0.1, 0.3, 0.5, 1.0, 100.0)
    assert s.collar == psds.CollarSettings(0.2, 0.2, 0.2)
    o = psds.Settings.from_mapping({"psds": {"psds1": {"max_efpr": 50.0},
                                             "psds3": {"dtc_threshold": 0.5,
                                                       "gtc_threshold": 0.5}},
                                    "collar": {"onset_collar": 0.25}})
    assert o.psds["psds1"].max_efpr == 50.0 and o.psds["psds1"].dtc_threshold == 0.7
    assert o.psds["psds3"].alpha_st == 1.0 and o.collar.onset_collar == 0.25
    assert psds.Settings.from_mapping(s.to_dict()) == s  # the figures' settings read back
    with pytest.raises(ValueError, match="unknown"):
        psds.Settings.from_mapping({"psds_1": {}})
    with pytest.raises(ValueError, match="psds1"):
        psds.Settings.from_mapping({"psds": {"psds1": {"dtc": 0.5}}})

    files, probs, events, valid = random_case(2, num_files=6)
    figures, curves = psds.threshold_independent(
        probs, files, FRAME, CLASSES, events,
        settings={"psds": {"psds1": {"max_efpr": 50.0}}})
    assert figures["settings"]["psds"]["psds1"]["max_efpr"] == 50.0
    assert curves["psds1"]["efpr"][-1] == 50.0
    text = psds.format_lines(figures, class_wise=True)
    assert "PSDS1" in text and "PSDS2" in text and "best collar F1" in text
    assert "max eFPR 50/hour" in text and "Speech" in text


def test_save_and_plot_curves(tmp_path):
    files, probs, events, valid = random_case(4, num_files=4)
    figures, curves = psds.threshold_independent(probs, files, FRAME, CLASSES, events)
    png = outputs.plot_psd_roc(curves, tmp_path / "psd_roc.png", figures)
    assert png is None or (tmp_path / "psd_roc.png").stat().st_size > 0
    path = psds.save_curves(tmp_path / "c.npz", curves)
    with np.load(path) as z:
        np.testing.assert_array_equal(z["psds2/efpr"], curves["psds2"]["efpr"])
        np.testing.assert_array_equal(z["psds1/class_wise/Cat/thresholds"],
                                      curves["psds1"]["class_wise"]["Cat"]["thresholds"])


# ---- python -m sedjax.evaluate --probs -------------------------------------------------------

def write_inputs(tmp_path, files, probs, events):
    ref = tmp_path / "ref.csv"
    event_files.write_events(ref, events, files)
    np.save(tmp_path / "probs.npy", probs)
    return ref, tmp_path / "probs.npy"


def test_cli_probs_equals_threshold_independent(tmp_path, capsys):
    files, probs, events, _ = random_case(5, num_files=10)
    ref, probs_npy = write_inputs(tmp_path, files, probs, events)
    out = tmp_path / "res.json"
    classes = ["--classes", ",".join(CLASSES)]
    rc = evaluate.main([str(ref), "--probs", str(probs_npy), "--frame_seconds", str(FRAME),
                        "--json", str(out), "--curves", str(tmp_path / "curves.npz"), *classes])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "PSDS1" in printed and "best collar F1" in printed and "ev F1%" not in printed
    got = json.loads(out.read_text())["threshold_independent"]
    # by default the config's median filter (the baseline's: 51 frames), as a run scores
    expected, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events,
                                             {f: T * FRAME for f in files}, median_filter=51)
    assert got == json.loads(json.dumps({**expected, "frame_seconds": FRAME,
                                         "reference_files_without_scores": 0}))
    assert (tmp_path / "curves.npz").exists()

    # Rows in another order, given by --probs_order; with the estimated CSV too; durations file.
    perm = np.random.default_rng(0).permutation(len(files))
    np.save(probs_npy, probs[perm])
    est = tmp_path / "est.csv"
    event_files.write_events(est, [], [files[i] for i in perm])
    durations = tmp_path / "durations.tsv"
    durations.write_text("filename\tduration\n" + "".join(f"{f}\t10.0\n" for f in files))
    rc = evaluate.main([str(ref), str(est), "--probs", str(probs_npy), "--frame_seconds",
                        str(FRAME), "--probs_order", str(est), "--durations", str(durations),
                        "--median_filter", "1", "--json", str(out), *classes])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ev F1%" in printed and "PSDS2" in printed
    results = json.loads(out.read_text())
    assert results["event_based"]["f_measure_macro"] == 0.0
    expected, _ = psds.threshold_independent(probs, files, FRAME, CLASSES, events,
                                             {f: T * FRAME for f in files}, median_filter=1)
    assert {k: v for k, v in results["threshold_independent"].items()
            if k not in ("frame_seconds", "reference_files_without_scores")} == \
        json.loads(json.dumps(expected))


def test_cli_probs_frame_seconds_from_config_and_bad_inputs(tmp_path, capsys):
    files, probs, events, _ = random_case(6, num_files=5)
    ref, probs_npy = write_inputs(tmp_path, files, probs, events)
    out = tmp_path / "res.json"
    classes = ["--classes", ",".join(CLASSES)]
    # default frame length: the baseline config's hop 320 / 16 kHz x time pooling 1 = 20 ms
    assert evaluate.main([str(ref), "--probs", str(probs_npy), "--json", str(out),
                          *classes]) == 0
    assert json.loads(out.read_text())["threshold_independent"]["frame_seconds"] == 0.02
    capsys.readouterr()

    # a reference file without a row: left out with a warning
    order = tmp_path / "order.csv"
    event_files.write_events(order, [], files[:4])
    np.save(tmp_path / "four.npy", probs[:4])
    assert evaluate.main([str(ref), "--probs", str(tmp_path / "four.npy"), "--probs_order",
                          str(order), "--frame_seconds", "0.05", "--json", str(out),
                          *classes]) == 0
    assert "1 files of" in capsys.readouterr().err
    got = json.loads(out.read_text())["threshold_independent"]
    assert got["num_files"] == 4 and got["reference_files_without_scores"] == 1

    cases = [
        ([str(ref), *classes], "give an estimated events CSV, --probs"),
        ([str(ref), "--probs", str(tmp_path / "four.npy"), *classes], "has shape"),
        ([str(ref), "--probs", str(tmp_path / "none.npy"), *classes], "not found"),
        ([str(ref), "--probs", str(probs_npy), "--frame_seconds", "0", *classes], "> 0"),
        ([str(ref), "--probs", str(probs_npy), "--durations", str(order), *classes],
         "'duration'"),
        ([str(ref), "--probs", str(probs_npy), "--median_filter", "3,5", *classes],
         "one per class"),
        ([str(ref), "--probs", str(probs_npy), "--median_filter", "x", *classes], "integers"),
    ]
    stranger = tmp_path / "stranger.csv"
    event_files.write_events(stranger, [], ["zz.wav"])
    cases.append(([str(ref), "--probs", str(probs_npy), "--probs_order", str(stranger),
                   *classes], "zz.wav"))
    for argv, needle in cases:
        assert evaluate.main(argv) == evaluate.EXIT_BAD_INPUT, argv
        err = capsys.readouterr().err
        assert needle in err, (argv, err)
