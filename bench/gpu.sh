#!/usr/bin/env bash
# Every GPU measurement bench/RESULTS.md still lacks, in one device call (~6 min on an H100; device time is scarce).
#   here, once:   source .venv/bin/activate && bash ../shared/gpu/wheelhouse.sh        # fills .whl/ (git-ignored)
#   on the GPU:   the device tool's run with carry [".whl"]:  bash bench/gpu.sh
# Writes its tables to $OUT (the device tool brings them back), else to bench/results/gpu-<date>/.
# What it answers: do the GPU-only tests pass; is the polar Haar sampler faster than Cholesky-QR on the H100
# (docs/optimizers.md, "Which Q sampler"); what the OrthoNoise step and the full 350M/1B training steps cost with
# each (the noise now drawn ahead, alongside forward+backward); NOLAH's step with its sort-based percentile.
# Worst case under its timeouts ~9.5 min, inside the device's 10-minute command limit.
set -uo pipefail  # no -e: one failed measurement must not cost the others
cd "$(dirname "$0")/.."
out=${OUT:-bench/results/gpu-$(date +%F)}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
# the GPU-only tests first (side-stream noise, Triton conv1d): a wrong result makes the timings moot
timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -5 | tee "$out/gpu_tests.txt"

for shapes in 350m 1b; do
  timeout 150 python3 bench/optimizer.py --device cuda --shapes "$shapes" --min-seconds 0.3 \
    --rows torch.optim.Muon Muon OrthoNoise "OrthoNoise sampler=polar" IsotropicNoise NOLAH \
    2>&1 | tee "$out/optimizer_$shapes.md"
done

timeout 300 python3 bench/train_step.py --models granite-350m,granite-1b \
  --optimizers orthonoise,orthonoise:sampler=polar,muon --cudagraph --skip-user 350m,1b \
  --steps 6 --warmup 2 --deadline 270 --timeout 160 --out "$out/train_step" 2>&1 | tail -40
