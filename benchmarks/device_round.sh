#!/usr/bin/env bash
# The GPU measurements the README reports, each under its own time limit, for a session
# lent a GPU machine that starts bare and cannot reach a package index. All of them take
# more than one 10-minute call; those the README still asks for fit one (the 30-MLP table
# as canon prepares its pairs, then with its preparing threads not taking turns, then with
# one thread, in one process):
#
#     STEPS="check_device table_mlp30_turns" bash benchmarks/device_round.sh OUT
#
#   1. check_device    canon's results on the GPU equal the CPU's (small networks), and a
#                      table with pairs prepared beside evaluations equals one without
#   1b. syncs          host reads and launches per table pair against the floor's (MLP)
#   2. assign          the device solver (auction) against scipy at n = 512, 2048, 4096: the
#                      speed-ups at 512/2048/4096 and the crossover for AUCTION_FROM['cuda']
#                      (each size's row also goes to the log as it is measured)
#   2b. assign4096     n = 4096 alone, one matrix a call (several auctions of tens of
#                      seconds each: most of a call; run it by itself)
#   3. align2048       canonicalize / the assignment solves canon makes, MLP width 2048, with
#                      the auction from the crossover step 2 measured (or never)
#   4. stacking        stacked against point-by-point evaluation: STACK_WORK['cuda']
#   4b. layout         convnets' images channels-last against NCHW: CHANNELS_LAST['cuda']
#   5. table_mlp30     the 30-MLP barrier table (435 pairs): time per pair, ratio to floor
#   5b. table_mlp30_serial  the same without preparing pairs beside evaluations (OVERLAP off)
#   5c. table_mlp30_threads  the same, then again with 1 and 2 pairs of a group prepared at
#                      a time (fresh copies of the zoo, one process: one host for all three)
#   5d. table_mlp30_turns  the same, then again with the preparing threads not taking turns
#                      at launching ops (BATON off) and with one thread
#   6. table_resnet20  the 12-ResNet-20 table on 10,000 inputs (66 pairs; floors once, after)
#
# Before (where pip reaches an index): bash benchmarks/device_wheels.sh. On the GPU
# machine, from the repository root, with .whl carried along:
#
#     bash benchmarks/device_round.sh "$OUT"
#
# Each step writes OUT/<step>.json (its benchmark's --json report); every step's log and
# exit status go to OUT/log.txt. PYTHON (default python3) and DEVICE (default cuda) may be
# set, QUICK=1 runs each step at a tiny size (to try the script on a CPU), and STEPS (names
# separated by spaces) runs only those steps.
set -u
out=${1:?usage: device_round.sh OUT_DIR}
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
mkdir -p "$out"
log="$out/log.txt"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # canon from the checkout
if [ -d .whl ] && ! "$python" -c "import sqlalchemy, alembic" 2>/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/canon-site .whl/*.whl >>"$log" 2>&1 || { echo "wheels failed" >>"$log"; exit 1; }
    export PYTHONPATH=$PYTHONPATH:/tmp/canon-site
fi
"$python" -c "import torch; d = torch.device('$device'); \
print('device', torch.cuda.get_device_name(d) if d.type == 'cuda' else 'cpu', 'torch', torch.__version__)" \
    >>"$log" 2>&1

step() {  # name, seconds, command... (skipped unless STEPS, where set, names it)
    local name=$1 limit=$2
    shift 2
    case " ${STEPS:-$name} " in *" $name "*) ;; *) return ;; esac
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.json" 2>>"$log"
    echo "== $name: exit $? in $((SECONDS - start)) s" | tee -a "$log"
}

if [ "${QUICK:-0}" = 1 ]; then
    floors=()
    sizes=(--sizes 64 128) big=(--sizes 96 --batch 1) widths=(--widths 256)
    stack=(--widths 16 64 --inputs 1000)
    mlp=(--n 3 --width 64 --inputs 1000) resnet=(--n 2 --inputs 256 --points 5)
    layout=(--inputs 64 --points 3 --repeats 1) syncs=(--n 3 --inputs 256)
else
    sizes=(--sizes 512 2048 4096 --batch 2 --repeats 1) widths=(--widths 2048 --repeats 1)
    big=(--sizes 4096 --batch 1 --repeats 1)
    stack=() layout=() floors=(--floor-every 0) syncs=(--n 4 --inputs 10000)
    mlp=(--n 30) resnet=(--n 12 --inputs 10000 --budget-s 190)
fi
step check_device 60 "$python" benchmarks/check_device.py --device "$device"
step syncs 40 "$python" benchmarks/bench_syncs.py --device "$device" "${syncs[@]}" --json
step assign 120 "$python" benchmarks/bench_assign.py --device "$device" "${sizes[@]}" --json
step assign4096 420 "$python" benchmarks/bench_assign.py --device "$device" "${big[@]}" --json
# canonicalize with the solver the crossover just measured picks (AUCTION_FROM as it would be)
from=$("$python" -c "import json, sys; c = json.load(open(sys.argv[1]))['crossover']; \
print(c or 'never')" "$out/assign.json" 2>/dev/null || echo never)
step align2048 70 "$python" benchmarks/bench_align.py --device "$device" --no-resnet18 \
    --auction-from "$from" "${widths[@]}" --json
step stacking 50 "$python" benchmarks/bench_stacking.py --device "$device" "${stack[@]}" --json
step layout 40 "$python" benchmarks/bench_layout.py --device "$device" "${layout[@]}" --json
step table_mlp30 110 "$python" benchmarks/bench_table.py --device "$device" "${mlp[@]}" --json
step table_mlp30_serial 110 "$python" benchmarks/bench_table.py --device "$device" "${mlp[@]}" \
    --overlap off --json
step table_mlp30_threads 170 "$python" benchmarks/bench_table.py --device "$device" \
    "${mlp[@]}" --also-threads 1 2 --json
step table_mlp30_turns 170 "$python" benchmarks/bench_table.py --device "$device" \
    "${mlp[@]}" --also-turns off --also-threads 1 --json
step table_resnet20 250 "$python" benchmarks/bench_table.py --device "$device" --arch resnet20 \
    "${resnet[@]}" "${floors[@]}" --json
