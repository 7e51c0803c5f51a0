"""launch/kill_test.sh --random: the tiny configs SIGKILLed at random moments of every stage
(two-pass recipe, mean teacher: 5 kills each; two-pass as 2 processes: 2, its runs are the
slowest), rerun after each kill; every chain of reruns ends with the uninterrupted run's
outputs, bit for bit."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups, gloo: Linux")
@pytest.mark.parametrize("jobs, kills", [("two_pass,mean_teacher", 5), ("two_processes", 2)])
def test_random_kills_and_reruns_end_as_an_uninterrupted_run(tmp_path, jobs, kills):
    env_path = f"{pathlib.Path(sys.executable).parent}:"
    proc = subprocess.run(
        ["bash", "launch/kill_test.sh", "--random", str(kills), str(tmp_path), "--tiny",
         f"--jobs={jobs}"],
        cwd=ROOT, capture_output=True, text=True, timeout=3000,
        env={**os.environ, "PATH": env_path + os.environ["PATH"]})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    summaries = re.findall(r"^(\w+): (\d+) kills \((.*)\); (\d+) reruns completed, (\d+) failed; "
                           r"(\d+) of (\d+) chains equal", proc.stdout, re.M)
    assert [s[0] for s in summaries] == jobs.split(",")
    for job, done, stages, completed, failed, equal, chains in summaries:
        assert int(done) == kills and failed == "0" and equal == chains != "0", proc.stdout
        assert sum(int(n) for n in re.findall(r" (\d+)(?:,|$)", stages)) == kills
