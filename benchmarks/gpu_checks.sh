#!/bin/bash
# icrl's checks on an NVIDIA GPU, in one run of at most ten minutes (each step has its limit, the most useful come
# first), each result a file in $OUT (default: gpu-checks/).
#
#   bash benchmarks/gpu_checks.sh                  # from the repository's root, icrl installed or not
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_checks.sh   # the same steps at tiny sizes on a CPU (tests/test_benchmarks.py)
#
# Python: $PYTHON, else the repository's .venv/bin/python, else python3. One with CUDA torch, Lightning, torchmetrics,
# TensorBoard and matplotlib is enough: the repository is put on PYTHONPATH, and pure-Python packages the machine
# lacks are installed from .whl/ if it holds wheels, e.g. made by
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0
#
# The files (docs/performance.md, "GPU", says what to make of them):
#   device.txt           GPU, driver, torch, Lightning
#   recall_step.json     a recall step of every attention × parameterization against the dense formula, on the GPU:
#                        losses and gradients compared (all_match) and timed
#   fit-scalars.csv      Reparam-Linear-FA (configs/recall/fig1) trained on the GPU: the scalars of icrl fit
#   ensemble-equal.txt   sweeps/recall-alpha.yaml as an ensemble of 6 and as 6 single runs: largest difference
#   ensemble.json        member-steps/s of an ensemble against K (benchmarks/ensemble.py), prompts drawn on the device
#   fig1.txt             icrl-reproduce recall-fig1, 36 runs, with --ensemble 6 and without: wall time and claims
#   log.txt              everything the steps printed
set -u -o pipefail
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
DEVICE=${DEVICE:-cuda} QUICK=${QUICK:-}
OUT=${OUT:-gpu-checks}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" .whl/*.whl || exit 1
    export PYTHONPATH="$WORK/site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/log.txt") 2>&1
failed=0
step() {  # step NAME SECONDS COMMAND...: runs it under a time limit, says how it ended
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name" >&2
    timeout "$limit" "$@"
    local code=$?
    echo "== $name: exit $code in $((SECONDS - start)) s" >&2
    [ "$code" = 0 ] || failed=1
}
if [ -n "$QUICK" ]; then  # tiny sizes: the plumbing, not the numbers
    RECALL=(--batch 8 --context 16 --vocab 12 --d-model 32 --rounds 1 --fast-calls 1 --attention LinearAttention)
    KS=(--ks 1 2 --batch 8 --context 16 --rounds 1 --steps 1)
    FIT=(--trainer.max_steps 20 --trainer.val_check_interval 10 --data.context_length 16 --data.n_val 64)
    SWEEP=("trainer.max_steps: 20" "trainer.val_check_interval: 10" "data.context_length: 16" "data.n_val: 64")
    JOBS=${JOBS:-2}
    FIG1=(--quick --steps 20 --seeds 0)
else
    RECALL=(--rounds 3)
    KS=(--ks 1 4 16 64 256)
    FIT=()
    SWEEP=()
    FIG1=()
    JOBS=${JOBS:-6}
fi

step device 30 "$PY" -c "
import subprocess, torch, lightning
print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.version.cuda)
print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')
print(subprocess.run(['nvidia-smi'], capture_output=True, text=True).stdout if torch.cuda.is_available() else '')
" > "$OUT/device.txt"
step recall_step 90 "$PY" benchmarks/recall_step.py --device "$DEVICE" --threads 1 "${RECALL[@]}" --json \
    > "$OUT/recall_step.json"
step fit 60 "$PY" -m icrl fit --config configs/recall/fig1/reparam-linear-fa.yaml "${FIT[@]}" \
    --trainer.enable_progress_bar false --trainer.default_root_dir "$WORK/fit"
cp "$(find "$WORK/fit" -name scalars.csv | head -1)" "$OUT/fit-scalars.csv"

# The members of an ensemble against their single runs, on this device (tests/test_ensemble.py does it on a CPU).
"$PY" - "$WORK/equal.yaml" "${SWEEP[@]}" <<'EOF'
import sys, yaml
from pathlib import Path
sweep = yaml.safe_load(open("sweeps/recall-alpha.yaml"))
sweep["config"] = str((Path("sweeps") / sweep["config"]).resolve())
for line in sys.argv[2:]:
    sweep["set"].update(yaml.safe_load(line))
yaml.safe_dump(sweep, open(sys.argv[1], "w"))
EOF
for k in 6 1; do
    step "sweep --ensemble $k" 60 "$PY" -m icrl sweep "$WORK/equal.yaml" --jobs 1 --ensemble "$k" \
        --out "$WORK/equal-$k" --no-progress
done
"$PY" - "$WORK" > "$OUT/ensemble-equal.txt" <<'EOF'
import csv, sys
rows = [list(csv.DictReader(open(f"{sys.argv[1]}/equal-{k}/summary.csv"))) for k in (6, 1)]
worst = max((abs(float(a[c]) - float(b[c])), c) for a, b in zip(*rows) for c in a
            if a[c] != b[c] and c.endswith(("mean", "std")) and a[c] and b[c]) if rows[0] != rows[1] else (0.0, "")
print(f"summary.csv: {'identical' if rows[0] == rows[1] else 'differs'}; largest difference {worst[0]:.3g} {worst[1]}")
EOF
cat "$OUT/ensemble-equal.txt"
step ensemble 100 "$PY" benchmarks/ensemble.py --device "$DEVICE" "${KS[@]}" --json > "$OUT/ensemble.json"

for k in 6 1; do
    start=$SECONDS
    step "recall-fig1 --ensemble $k" 90 "$PY" -c "from icrl.reproduce import main; main()" recall-fig1 \
        --jobs "$JOBS" --ensemble "$k" "${FIG1[@]}" --out "$WORK/fig1-$k" --no-progress
    echo "--ensemble $k: $((SECONDS - start)) s, claims ✓ $(grep -c ✓ "$WORK/fig1-$k/results.md"), ✗ $(grep -c ✗ "$WORK/fig1-$k/results.md")" \
        >> "$OUT/fig1.txt"
done
cat "$OUT/fig1.txt"
rm -rf "$WORK"
exit $failed
