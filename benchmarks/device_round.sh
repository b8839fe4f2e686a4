#!/usr/bin/env bash
# Every GPU measurement the README reports as still to be made, as one command that ends in
# under 10 minutes on one GPU (each step under its own time limit, 580 s in all), for a
# session lent a GPU machine that starts bare and cannot reach a package index:
#
#   1. check_device    canon's results on the GPU equal the CPU's (small networks)
#   2. assign          the device solver (auction) against scipy at n = 64 ... 4096: the
#                      speed-ups at 512/2048/4096 and the crossover for AUCTION_FROM['cuda']
#   3. align2048       canonicalize / the assignment solves canon makes, MLP width 2048
#   4. stacking        stacked against point-by-point evaluation: STACK_WORK['cuda']
#   4b. layout         convnets' images channels-last against NCHW: CHANNELS_LAST['cuda']
#   5. table_mlp30     the 30-MLP barrier table (435 pairs): time per pair, ratio to floor
#   6. table_resnet20  the 12-ResNet-20 table on 10,000 inputs (66 pairs)
#
# Before (where pip reaches an index): bash benchmarks/device_wheels.sh. On the GPU
# machine, from the repository root, with .whl carried along:
#
#     bash benchmarks/device_round.sh "$OUT"
#
# Each step writes OUT/<step>.json (its benchmark's --json report); every step's log and
# exit status go to OUT/log.txt. PYTHON (default python3) and DEVICE (default cuda) may be
# set, and QUICK=1 runs each step at a tiny size (to try the script on a CPU).
set -u
out=${1:?usage: device_round.sh OUT_DIR}
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
mkdir -p "$out"
log="$out/log.txt"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # canon from the checkout
if [ -d .whl ] && ! "$python" -c "import canon.zoo" 2>/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/canon-site .whl/*.whl >>"$log" 2>&1 || { echo "wheels failed" >>"$log"; exit 1; }
    export PYTHONPATH=$PYTHONPATH:/tmp/canon-site
fi
"$python" -c "import torch; d = torch.device('$device'); \
print('device', torch.cuda.get_device_name(d) if d.type == 'cuda' else 'cpu', 'torch', torch.__version__)" \
    >>"$log" 2>&1

step() {  # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.json" 2>>"$log"
    echo "== $name: exit $? in $((SECONDS - start)) s" | tee -a "$log"
}

if [ "${QUICK:-0}" = 1 ]; then
    sizes=(--sizes 64 128) widths=(--widths 256) stack=(--widths 16 64 --inputs 1000)
    mlp=(--n 3 --width 64 --inputs 1000) resnet=(--n 2 --inputs 256 --points 5)
    layout=(--inputs 64 --points 3 --repeats 1)
else
    sizes=() widths=(--widths 2048) stack=() layout=()
    mlp=(--n 30) resnet=(--n 12 --inputs 10000)
fi
step check_device 60 "$python" benchmarks/check_device.py --device "$device"
step assign 110 "$python" benchmarks/bench_assign.py --device "$device" "${sizes[@]}" --json
step align2048 80 "$python" benchmarks/bench_align.py --device "$device" --no-resnet18 \
    "${widths[@]}" --json
step stacking 50 "$python" benchmarks/bench_stacking.py --device "$device" "${stack[@]}" --json
step layout 40 "$python" benchmarks/bench_layout.py --device "$device" "${layout[@]}" --json
step table_mlp30 110 "$python" benchmarks/bench_table.py --device "$device" "${mlp[@]}" --json
step table_resnet20 130 "$python" benchmarks/bench_table.py --device "$device" --arch resnet20 \
    "${resnet[@]}" --json
