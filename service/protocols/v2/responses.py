"""V2 inference responses: outputs as FP32 or Triton's classification strings, in JSON, in
the binary tail or in shared memory."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service.protocols.v2.messages import ParsedInference, V2Model
from service.shared_memory import SharedMemoryRegistry

if TYPE_CHECKING:
    pass


def classification_strings(
    probabilities: np.ndarray, labels: list[str], classes: int
) -> list[bytes]:
    """Triton's "value:index:label" strings for the top ``classes`` of each row, row by row.

    Args:
        probabilities: float32 (N, len(labels)).
    """
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :classes]
    return [
        f"{probabilities[row, index]:.6f}:{index}:{labels[index]}".encode()
        for row in range(probabilities.shape[0])
        for index in order[row]
    ]


@dataclass(frozen=True)
class EncodedOutput:
    """One output as the protocol returns it: its metadata, its values as little-endian bytes
    (BYTES: each element after its 4-byte length) and as JSON data."""

    name: str
    datatype: str
    shape: list[int]
    raw: bytes
    data: Any


def encoded_outputs(
    model: V2Model, parsed: ParsedInference, tensors: dict[str, np.ndarray]
) -> list[EncodedOutput]:
    """Each requested output, classified (Triton's strings) or as FP32, in request order.

    Args:
        tensors: output name -> float32 (N, ...) for each requested output.
    """
    encoded = []
    for requested in parsed.outputs:
        values = tensors[requested.name]
        if requested.classes is not None:
            strings = classification_strings(values, model.card.labels, requested.classes)
            encoded.append(
                EncodedOutput(
                    requested.name,
                    "BYTES",
                    [values.shape[0], requested.classes],
                    b"".join(struct.pack("<I", len(text)) + text for text in strings),
                    [text.decode() for text in strings],
                )
            )
        else:
            encoded.append(
                EncodedOutput(
                    requested.name,
                    "FP32",
                    list(values.shape),
                    values.astype("<f4", copy=False).tobytes(),
                    values.ravel(),
                )
            )
    return encoded


def encode_response(
    model: V2Model,
    parsed: ParsedInference,
    tensors: dict[str, np.ndarray],
    shared_memory: SharedMemoryRegistry | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary tensors, the JSON header's length.

    Args:
        tensors: output name -> float32 (N, ...) for each requested output.
    """
    outputs: list[dict[str, Any]] = []
    binary_parts: list[bytes] = []
    for requested, output in zip(
        parsed.outputs, encoded_outputs(model, parsed, tensors), strict=True
    ):
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if requested.shared_memory is not None and shared_memory is not None:
            target = requested.shared_memory
            shared_memory.write(target.region, target.offset, target.byte_size, output.raw)
            entry["parameters"] = {
                "shared_memory_region": target.region,
                "shared_memory_byte_size": len(output.raw),
            }
        elif requested.binary:
            entry["parameters"] = {"binary_data_size": len(output.raw)}
            binary_parts.append(output.raw)
        else:
            entry["data"] = output.data
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model.name, "model_version": model.card.version}
    if parsed.request_id is not None:
        document["id"] = parsed.request_id
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary_parts:
        return header, None
    return header + b"".join(binary_parts), len(header)
