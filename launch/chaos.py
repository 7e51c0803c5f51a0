"""Chaos kill test: SIGKILL a run at random moments, rerun the same command, compare the end.

    python launch/chaos.py OUT N [--tiny] [--jobs=two_pass,mean_teacher,two_processes]
    (or launch/kill_test.sh --random N OUT [--tiny])

For each job (the two-pass recipe, the mean teacher, the two-pass recipe as 2 processes x 2 CPU
devices) it first runs the command once uninterrupted (OUT/<job>/whole) and takes its wall time
T. Then, in OUT/<job>/killed, it starts the same command and SIGKILLs it (its whole process
group) at a moment drawn uniformly from [0, T), reruns the same command and kills it again, N
times. A rerun that finishes before its kill ends a chain: its outputs must equal the
uninterrupted run's bit for bit (every prediction, pseudo-label and result JSON but wall
times), and the next kill starts a new chain in a fresh folder. After the N-th kill the command
is run to its end and compared too. SIGKILL leaves no chance to clean up: what survives is what
sedjax wrote atomically.

Prints, per job: the kills per stage (the last `stage X` line the run logged; "data generation"
while the generated dataset is incomplete), the reruns that completed, the chains whose
outputs equal. Exit status 1 when any chain differs or a rerun fails. Demo-sized runs by
default (shortened schedules, as launch/kill_test.sh); --tiny: the tests' configs (seconds).
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

JOBS = {  # name -> (command prefix, config flags); the workdir is appended
    "two_pass": (["python", "-m", "sedjax.main"],
                 ["--config=configs/demo.py", "--config.pass1.num_epochs=4",
                  "--config.pass2.num_epochs=1"]),
    "mean_teacher": (["python", "-m", "sedjax.main"],
                     ["--config=configs/demo_mean_teacher_strong.py",
                      "--config.mean_teacher.num_epochs=3"]),
    "two_processes": (["bash", "launch/multiprocess_cpu.sh", "2"],
                      ["configs/demo.py", "--config.pass1.num_epochs=4",
                       "--config.pass2.num_epochs=1"]),
}
TINY = {"configs/demo.py": "configs/tiny.py",
        "configs/demo_mean_teacher_strong.py": "configs/tiny_mean_teacher.py"}
STAGE = re.compile(r"\] stage (\w+)")


def command(job: str, workdir: pathlib.Path, tiny: bool) -> list[str]:
    prefix, flags = JOBS[job]
    if tiny:  # the tiny configs with their own schedules
        config = flags[0].removeprefix("--config=")
        flags = [flags[0].replace(config, TINY[config])]
    if prefix[0] == "bash":  # launch/multiprocess_cpu.sh N CONFIG WORKDIR FLAGS...
        config = flags[0].removeprefix("--config=")
        return [*prefix, config, str(workdir), *flags[1:]]
    return [*prefix, *flags, f"--workdir={workdir}"]


def start(cmd: list[str], log: pathlib.Path) -> subprocess.Popen:
    env = {**os.environ, "SEDJAX_DEVICES_PER_PROCESS": "2",  # the launcher's python is ours
           "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    if cmd[0] == "python":
        cmd = [sys.executable, *cmd[1:]]
    with open(log, "w") as out:  # its own process group: the kill takes every process
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def stage_of(log: pathlib.Path, workdir: pathlib.Path) -> str:
    found = STAGE.findall(log.read_text(errors="replace"))
    if not found:
        return "start-up"
    if found[-1] == "data" and not any(workdir.glob("synthetic/.complete")):
        return "data generation"
    return found[-1]


def run_to_end(cmd, log) -> int:
    proc = start(cmd, log)
    return proc.wait()


def same(whole: pathlib.Path, other: pathlib.Path) -> bool:
    from test_preemption import assert_same_outputs  # pylint: disable=import-outside-toplevel
    try:
        assert_same_outputs(whole, other)
        return True
    except AssertionError as e:
        print(f"    {other}: differs from {whole}: {str(e)[:300]}")
        return False


def chaos(job: str, out: pathlib.Path, kills: int, tiny: bool, rng: random.Random) -> bool:
    base = out / job
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    whole = base / "whole"
    began = time.time()
    rc = run_to_end(command(job, whole, tiny), base / "whole.log")
    total = time.time() - began
    if rc != 0:
        print(f"{job}: the uninterrupted run failed ({rc}); see {base / 'whole.log'}")
        return False
    print(f"{job}: uninterrupted run {total:.0f} s")
    stages: collections.Counter = collections.Counter()
    chains, equal, completed, failed, attempt = 0, 0, 0, 0, 0
    workdir = base / f"killed{chains}"
    done = 0
    while done < kills:
        attempt += 1
        log = base / f"attempt{attempt}.log"
        proc = start(command(job, workdir, tiny), log)
        at = rng.uniform(0, total)
        try:
            rc = proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            where = stage_of(log, workdir)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            stages[where] += 1
            done += 1
            print(f"  kill {done:2d} at {at:5.1f} s: {where}")
            continue
        if rc != 0:
            failed += 1
            print(f"  attempt {attempt}: the rerun failed ({rc}); see {log}")
            return False
        completed += 1
        chains += 1
        equal += same(whole, workdir)
        workdir = base / f"killed{chains}"
    rc = run_to_end(command(job, workdir, tiny), base / "last.log")
    if rc != 0:
        print(f"  the last rerun failed ({rc}); see {base / 'last.log'}")
        return False
    completed += 1
    chains += 1
    equal += same(whole, workdir)
    print(f"{job}: {done} kills ({', '.join(f'{s} {n}' for s, n in stages.most_common())}); "
          f"{completed} reruns completed, {failed} failed; {equal} of {chains} chains equal "
          "to the uninterrupted run")
    return equal == chains and failed == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("kills", type=int)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ok = [chaos(job, args.out.resolve(), args.kills, args.tiny, rng)
          for job in args.jobs.split(",")]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
