#!/usr/bin/env bash
# The two models of issue 23's route table (benchmarks/retro/run_v2.py --model / --forward-model),
# made from the committed recipe: the ORD split (seed 0), then the USPTO-50k + ORD template MLP
# and its forward twin, side by side, one torch thread each. On one thread the builds are bit
# for bit the same (checked: two builds on fresh processes, the same SHA-256), so the SHA-256
# printed at the end is the one run_v2's cache holds (its "model_sha256" and each setting's
# "forward_model_sha256"); run_v2 refuses other files.
#   bash benchmarks/retro/make_models.sh [OUT]        # default runs/retro-models; ~30 min
# Run it with this repository's .venv active (or PY=path/to/python).
set -euo pipefail
OUT=${1:-runs/retro-models}
PY=${PY:-python}
mkdir -p "$OUT"
"$PY" -m selfsup.chem.retro.workflows.ord_split --seed 0
train() {
  OMP_NUM_THREADS=1 "$PY" -c "from selfsup.cli import main; raise SystemExit(main())" chem train-single-step \
    --config configs/retro/single_step_ord_cpu.yaml trainer.threads=1 "run_root=$OUT/$1" "${@:2}"
}
train backward > "$OUT/backward.log" 2>&1 &
b=$!
train forward model.direction=forward > "$OUT/forward.log" 2>&1 &
f=$!
wait "$b"
wait "$f"
for d in backward forward; do
  m=$(ls -d "$OUT/$d"/*/model.pt | tail -n 1)
  echo "$d: $m sha256 $(sha256sum "$m" | cut -c1-16)"
done
