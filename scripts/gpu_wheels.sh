#!/usr/bin/env bash
# Fetch, here, the wheels that the lent GPU machine's image lacks (it reaches no package registry), into .whl/
# (git-ignored). That image has Python 3.12 with torch, numpy, pandas, scipy, h5py, matplotlib, pytest, pyyaml,
# scikit-learn and typer, but not the simulators, Minari, SB3 or the d3rlpy peer (/work/.library/device/KINDS.md).
# The versions are those a fresh install of ctrlbench resolved on 2026-12-02, plus the benchmark's d3rlpy peer.
# Then run scripts/gpu_check.sh there, carrying .whl. About 27 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl \
  gymnasium==1.4.0 farama-notifications==0.0.6 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 \
  websockets==17.4 glfw==2.11.0 pyopengl==3.1.10 minari==0.5.4 stable-baselines3==2.9.2 \
  d3rlpy==2.8.1 gym-notices==0.1.0 structlog==26.1.0 dataclasses-json==0.6.7 marshmallow==3.26.2
# gym (d3rlpy's import) is published as a source archive only; it is pure Python, so a wheel built here runs there.
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w .whl gym==0.26.2
du -sh .whl
