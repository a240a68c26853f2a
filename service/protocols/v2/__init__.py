"""The Open Inference Protocol ("KServe V2") with Triton's binary tensor and classification
extensions, independent of the framing: the HTTP routes (``service/api/v2.py``) and the gRPC
service (``service/grpc_api/``) both parse with ``requests``, publish with ``models`` and answer
with ``responses``.

A request is a JSON header, optionally followed by the raw bytes of binary tensors (its length is
then in ``Inference-Header-Content-Length``). This service's models take one input (``input``,
FP32 [-1, H, W, 1] in [0, 1]; UINT8 0-255 is accepted too) and produce ``probabilities`` and one
output per conv/pool layer (the feature maps), which a client asks for by name.
"""

from service.protocols.v2.messages import (
    HEADER_LENGTH,
    SALIENCY_OUTPUT,
    SERVER_EXTENSIONS,
    InferenceRequest,
    ParameterValue,
    ParsedInference,
    V2Model,
)
from service.protocols.v2.models import (
    BatchingLimits,
    model_config,
    model_metadata,
    served_model,
    statistics,
)
from service.protocols.v2.requests import (
    checked_request,
    parse_request,
    split_body,
    validated_request,
    within_output_limits,
)
from service.protocols.v2.responses import encode_response, encoded_outputs

__all__ = [
    "HEADER_LENGTH",
    "SALIENCY_OUTPUT",
    "SERVER_EXTENSIONS",
    "BatchingLimits",
    "InferenceRequest",
    "ParameterValue",
    "ParsedInference",
    "V2Model",
    "checked_request",
    "encode_response",
    "encoded_outputs",
    "model_config",
    "model_metadata",
    "parse_request",
    "served_model",
    "split_body",
    "statistics",
    "validated_request",
    "within_output_limits",
]
