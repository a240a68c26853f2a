#!/usr/bin/env bash
# Regenerates service/grpc_api/inference_pb2.py and inference_pb2.pyi (the messages) from
# service/grpc_api/inference.proto with grpcio-tools (pinned in constraints.txt). They are
# committed; tests/service/test_grpc.py fails when they no longer match the .proto. The service
# is registered from the .proto's descriptor (service/grpc_api/messages.py): no grpc stubs.
# Usage: scripts/generate_grpc_stubs.sh [OUTPUT_DIR]   (default: service/grpc_api)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-service/grpc_api}
python -m grpc_tools.protoc --proto_path=service/grpc_api --python_out="$out" --pyi_out="$out" \
  service/grpc_api/inference.proto
