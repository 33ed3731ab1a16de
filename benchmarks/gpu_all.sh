#!/usr/bin/env bash
# Every GPU number of the README (sections "GPU" and "Fine-tuning") in one run on one GPU
# machine, most important first, each stage under its own time limit, so that a run cut
# short still leaves the first results. Needs PyTorch with CUDA and Keras 3 (no Spark,
# no Java, no network: weights are seeded random).
#
#   bash benchmarks/gpu_all.sh ../shared/data/ozturk results/
#
# FINETUNE_ARGS adds flags to the fine-tuning stage (e.g. "--unfreeze 33 --finetune-lr 1e-4").
# Writes into the results folder: nvidia-smi.txt, featurize_resnet50.json,
# finetune.json, featurize_inceptionv3.json, featurize_workers.json (and prints them).
set -u
data=$(realpath "$1")
out=$(realpath "$2")
mkdir -p "$out"
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1 KERAS_BACKEND=torch
python=${PYTHON:-python3}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
    > "$out/nvidia-smi.txt" 2>&1
cat "$out/nvidia-smi.txt"
"$python" -c "import torch, keras; print('torch', torch.__version__, 'keras', keras.__version__,
'cuda', torch.cuda.is_available())"

stage() {  # stage SECONDS NAME COMMAND...
    local limit=$1 name=$2
    shift 2
    echo "=== $name (limit ${limit}s) $(date +%T)"
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - t0)) s"
}

# 1. The featurizer's torch engine end to end vs model.predict vs model-only, ResNet50.
stage "${FEATURIZE_LIMIT:-150}" featurize-resnet50 "$python" gpu_featurize.py \
    --data "$data/images" --files 10000 --models ResNet50 --precisions bfloat16,float32 \
    --json "$out/featurize_resnet50.json"
# 2. Fine-tuning: training images/s per GPU, then a fit on the grouped split with test metrics.
stage "${FINETUNE_LIMIT:-200}" finetune-resnet50 "$python" -m torch.distributed.run \
    --standalone --nproc_per_node 1 gpu_finetune.py --data "$data" --batch-size 64 \
    --finetune-epochs 15 --patience 4 ${FINETUNE_ARGS:-} --json "$out/finetune.json"
# 3. InceptionV3 (299 px) on the featurizer's path.
stage "${INCEPTION_LIMIT:-100}" featurize-inceptionv3 "$python" gpu_featurize.py \
    --data "$data/images" --files 10000 --models InceptionV3 --precisions bfloat16,float32 \
    --predict-files 1024 --json "$out/featurize_inceptionv3.json"
# 4. Several Python workers sharing the GPU (Spark: tasks per GPU). Batch 128: at batch 512
#    one process's PyTorch cache reached 59-78 GB, and four of those do not fit.
stage "${WORKERS_LIMIT:-180}" featurize-resnet50-workers "$python" gpu_featurize.py \
    --data "$data/images" --files 10000 --models ResNet50 --precisions bfloat16 \
    --batch-size 128 --predict-files 1024 --workers 2,4 --json "$out/featurize_workers.json"
