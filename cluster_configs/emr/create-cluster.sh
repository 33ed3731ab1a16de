#!/usr/bin/env bash
# Create an EMR 7.x cluster with GPU core nodes for covidspark.
#
#   cluster_configs/emr/create-cluster.sh s3://BUCKET/covidspark [KEY_NAME] [SUBNET_ID]
#
# Builds the wheel, uploads it with the bootstrap and discovery scripts, and
# creates the cluster with configurations.json and the steps of steps.json.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ARTIFACTS="${1:?usage: create-cluster.sh s3://bucket/covidspark [key-name] [subnet-id]}"
KEY_NAME="${2:-}"
SUBNET_ID="${3:-}"
RELEASE="${EMR_RELEASE:-emr-7.5.0}"
CORE_TYPE="${CORE_INSTANCE_TYPE:-g5.2xlarge}"

python3 -m pip wheel --no-deps --wheel-dir "$HERE/dist" "$HERE/../.."
aws s3 cp "$HERE/dist/" "$ARTIFACTS/" --recursive --exclude "*" --include "covidspark-*.whl"
aws s3 cp "$HERE/bootstrap.sh" "$ARTIFACTS/bootstrap.sh"
aws s3 cp "$HERE/getGpusResources.sh" "$ARTIFACTS/getGpusResources.sh"
aws s3 cp "$HERE/../../jobs/" "$ARTIFACTS/jobs/" --recursive --exclude "*" --include "*.py"

EC2_ATTRS="InstanceProfile=EMR_EC2_DefaultRole"
[ -n "$KEY_NAME" ] && EC2_ATTRS="$EC2_ATTRS,KeyName=$KEY_NAME"
[ -n "$SUBNET_ID" ] && EC2_ATTRS="$EC2_ATTRS,SubnetId=$SUBNET_ID"

sed "s#s3://BUCKET/covidspark#$ARTIFACTS#g" "$HERE/steps.json" >"$HERE/dist/steps.json"
aws emr create-cluster \
  --name covidspark-gpu \
  --release-label "$RELEASE" \
  --applications Name=Hadoop Name=Spark \
  --service-role EMR_DefaultRole \
  --ec2-attributes "$EC2_ATTRS" \
  --instance-groups \
    InstanceGroupType=MASTER,InstanceCount=1,InstanceType=m5.xlarge \
    InstanceGroupType=CORE,InstanceCount=2,InstanceType="$CORE_TYPE" \
  --configurations "file://$HERE/configurations.json" \
  --bootstrap-actions "Path=$ARTIFACTS/bootstrap.sh,Args=[$ARTIFACTS]" \
  --steps "file://$HERE/dist/steps.json" \
  --log-uri "$ARTIFACTS/logs/" \
  --auto-terminate
