#!/usr/bin/env bash
# The wheels that benchmarks/device_round.sh needs on a GPU machine whose Python has torch,
# numpy, scipy, safetensors, click, tqdm, matplotlib and scikit-learn but not canon's store
# (SQLAlchemy, Alembic) and that cannot reach a package index: those, for CPython 3.12 on
# x86-64 Linux, written to .whl/ (which git ignores). canon itself runs from the checkout.
#
#     bash benchmarks/device_wheels.sh        # here, where pip reaches an index
#
# then carry .whl to the GPU machine and run device_round.sh there, which installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    "sqlalchemy>=2.0,<2.1" "alembic>=1.12" "mako>=1.3" "greenlet>=3.0"
ls -l .whl
