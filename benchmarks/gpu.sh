#!/usr/bin/env bash
# The GPU figure: on a machine with CUDA, write a synthetic frame-level set (3,862 classes) to
# local disk and train the paper's configuration from it through the real loader with bf16,
# --compile and --sync-debug; print examples/s, the loader's examples/s alone and GPU memory.
#
#   bash benchmarks/gpu.sh [FOLDER] [VIDEOS]      (defaults: /tmp/nextvlad-gpu, 20000)
#
# The data (about 4 GB for 20,000 videos of 60-300 frames) is written once and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
folder=${1:-/tmp/nextvlad-gpu}
videos=${2:-20000}
if [ ! -f "$folder/data/.complete" ]; then
  python -m nextvlad synth --out "$folder/data" --videos "$videos" --shards 32 --classes 3862
  touch "$folder/data/.complete"
fi
python benchmarks/gpu_throughput.py --data "$folder/data/*.tfrecord" --json "${@:3}"
