"""ModelInferRequest and ModelInferResponse to and from what ``service.protocols.v2`` checks
and encodes: a gRPC request becomes the V2 JSON document an HTTP client would have sent (its raw
contents as the binary tail), so both framings share every check."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import BadRequestError, InvalidInputError
from service.grpc_api import inference_pb2 as pb
from service.protocols import v2
from service.state import ServingState


def parameter_value(parameter: Any) -> v2.ParameterValue | None:
    """An ``InferParameter`` or ``ModelRepositoryParameter`` as a Python value (None: unset)."""
    kind = parameter.WhichOneof("parameter_choice")
    if kind is None:
        return None
    value: v2.ParameterValue = getattr(parameter, kind)
    if isinstance(value, bytes):
        raise BadRequestError("bytes parameters are not supported")
    return value


def parameters_of(parameters: Any) -> dict[str, v2.ParameterValue]:
    values = {name: parameter_value(value) for name, value in parameters.items()}
    return {name: value for name, value in values.items() if value is not None}


# The typed-contents field that carries each accepted input datatype.
CONTENTS_FIELDS = {"FP32": "fp32_contents", "UINT8": "uint_contents"}


def _input_values(tensor: Any, raw: bytes | None) -> tuple[dict[str, Any], Any, bytes]:
    """(the input as a V2 JSON document's entry, its values as data, its bytes as the tail)."""
    entry: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
        "parameters": parameters_of(tensor.parameters),
    }
    if raw is not None:
        if tensor.HasField("contents"):
            raise BadRequestError(f"input {tensor.name!r} has both contents and raw_input_contents")
        entry["parameters"]["binary_data_size"] = len(raw)
        return entry, None, raw
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:  # service.protocols.v2 says which datatypes are accepted.
        return entry, [], b""
    filled = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    if filled and filled != [field]:
        raise InvalidInputError(
            f"input {tensor.name!r} of datatype {tensor.datatype} carries its values in "
            f"contents.{field}, not {', '.join(filled)}"
        )
    return entry, list(getattr(tensor.contents, field)), b""


def parse_infer_request(
    request: Any, model: v2.V2Model, state: ServingState, max_items: int
) -> v2.ParsedInference:
    """A ``ModelInferRequest`` checked as a V2 HTTP request is (``service.protocols.v2``).

    Raises:
        ServiceError: as ``service.protocols.v2.parse_request`` does.
    """
    raw_contents = list(request.raw_input_contents)
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise BadRequestError(
            f"raw_input_contents has {len(raw_contents)} entries for {len(request.inputs)} inputs"
        )
    inputs, data, tails = [], [], []
    for index, tensor in enumerate(request.inputs):
        entry, values, tail = _input_values(tensor, raw_contents[index] if raw_contents else None)
        inputs.append(entry)
        data.append(values)
        tails.append(tail)
    document: dict[str, Any] = {
        "id": request.id or None,
        "parameters": parameters_of(request.parameters),
        "inputs": inputs,
    }
    if request.outputs:
        document["outputs"] = [
            {"name": output.name, "parameters": parameters_of(output.parameters)}
            for output in request.outputs
        ]
    parsed = v2.checked_request(
        v2.validated_request(document), data, tails[0] if tails else b"", model, max_items, None
    )
    settings = state.settings
    return v2.within_output_limits(
        parsed, settings.max_feature_map_items, settings.max_explain_items
    )


def infer_response(
    model: v2.V2Model, parsed: v2.ParsedInference, tensors: dict[str, np.ndarray]
) -> Any:
    """The ``ModelInferResponse``: every output's values in ``raw_output_contents``, as
    Triton answers (tritonclient reads them there)."""
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.card.version, id=parsed.request_id or ""
    )
    for output in v2.encoded_outputs(model, parsed, tensors):
        response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        response.raw_output_contents.append(output.raw)
    return response
