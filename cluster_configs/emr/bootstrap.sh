#!/usr/bin/env bash
# EMR bootstrap action (every node): Python 3.11 with covidspark and its
# dependencies in /opt/covidspark/venv, and the GPU discovery script.
#
#   --bootstrap-actions Path=s3://BUCKET/covidspark/bootstrap.sh,Args=[s3://BUCKET/covidspark]
#
# $1: the S3 folder holding the covidspark wheel and getGpusResources.sh.
set -euxo pipefail
ARTIFACTS="${1:?usage: bootstrap.sh s3://bucket/covidspark}"

sudo dnf install -y python3.11 python3.11-pip || sudo yum install -y python3.11 python3.11-pip
sudo mkdir -p /opt/covidspark
sudo chown "$(id -u):$(id -g)" /opt/covidspark
python3.11 -m venv /opt/covidspark/venv
/opt/covidspark/venv/bin/pip install --upgrade pip wheel
aws s3 cp "$ARTIFACTS/" /opt/covidspark/dist/ --recursive --exclude "*" --include "*.whl"
# GPU nodes: the torch engine (PyPI's Linux torch wheel brings its CUDA libraries);
# CPU nodes: OpenVINO. engine="auto" picks each where it is installed.
WHEEL="$(ls /opt/covidspark/dist/covidspark-*.whl | head -1)"
if command -v nvidia-smi >/dev/null 2>&1; then EXTRA="torch"; else EXTRA="openvino"; fi
/opt/covidspark/venv/bin/pip install "${WHEEL}[${EXTRA}]"
aws s3 cp "$ARTIFACTS/getGpusResources.sh" /opt/covidspark/getGpusResources.sh
chmod a+rx /opt/covidspark/getGpusResources.sh
