#!/usr/bin/env bash
# Kill test: SIGTERM at three points of the demo (features, mid pass 1, mid mean-teacher
# epoch), each rerun with the same command; the final outputs must equal uninterrupted runs'
# bit for bit (every prediction, pseudo-label and result JSON but wall times).
#   launch/kill_test.sh OUT [EXTRA FLAGS...]
#   launch/kill_test.sh --random N OUT [--tiny] [--jobs=...]: SIGKILL at N random moments
#   per job instead, rerunning after each kill (launch/chaos.py says more)
# Shortened schedules by default (pass 1: 4 epochs, pass 2: 1, mean teacher: 3): the full
# demo takes ~25 min per run on a 2-core CPU, and a stop is a stop wherever it falls.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --random ]]; then
  n=${2:?number of kills}; out=${3:?output folder}; shift 3
  exec python launch/chaos.py "$out" "$n" "$@"
fi
out=${1:?output folder}; shift; mkdir -p "$out"
two_pass="--config=configs/demo.py --config.pass1.num_epochs=4 --config.pass2.num_epochs=1 $*"
mean_teacher="--config=configs/demo_mean_teacher_strong.py --config.mean_teacher.num_epochs=3 $*"
main() { python -m sedjax.main $1 --workdir="$2"; }
stop_after() {  # FLAGS WORKDIR PATTERN SECONDS: SIGTERM SECONDS after PATTERN is logged
  local log="$2.$(date +%s).log"
  main "$1" "$2" > "$log" 2>&1 & local pid=$!
  until grep -q "$3" "$log" 2>/dev/null; do sleep 0.5; kill -0 $pid 2>/dev/null || break; done
  sleep "$4"; kill -TERM $pid 2>/dev/null; wait $pid
  echo "SIGTERM ${4} s after '$3': exit $? $(grep -E '^error:' "$log" | tail -1)"
}
same() {
  python - "$1" "$2" <<'PY'
import sys; sys.path.insert(0, "tests")
from test_preemption import assert_same_outputs
import pathlib
assert_same_outputs(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
print(f"{sys.argv[2]}: equal to {sys.argv[1]}")
PY
}
main "$two_pass" "$out/two_pass" > "$out/two_pass.log" 2>&1
stop_after "$two_pass" "$out/two_pass_stopped" "features weak: wrote" 1
stop_after "$two_pass" "$out/two_pass_stopped" "pass1 epoch   2" 4
main "$two_pass" "$out/two_pass_stopped" > "$out/two_pass_stopped.log" 2>&1
same "$out/two_pass" "$out/two_pass_stopped"
main "$mean_teacher" "$out/mean_teacher" > "$out/mean_teacher.log" 2>&1
stop_after "$mean_teacher" "$out/mean_teacher_stopped" "mean_teacher epoch   1" 8
main "$mean_teacher" "$out/mean_teacher_stopped" > "$out/mean_teacher_stopped.log" 2>&1
same "$out/mean_teacher" "$out/mean_teacher_stopped"
