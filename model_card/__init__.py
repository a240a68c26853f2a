"""``model.json``: what the exporter (``training/``) promises and the service (``service/``) reads.

Both packages import this one, so the card's schema is written once. The service reads a card with
``ModelCard.from_json``; the exporter builds one as a dict and checks it against the same schema
before writing it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

PreprocessMethod = Literal["mnist", "resize", "none"]
PREPROCESS_METHODS: tuple[str, ...] = get_args(PreprocessMethod)
InvertPolicy = Literal["auto", "never", "always"]


class InputSpec(BaseModel):
    """The model's one input tensor: NHWC float32, batch dimension free (``null``)."""

    name: str
    shape: list[int | None]
    dtype: str
    value_range: list[float]

    @model_validator(mode="after")
    def _nhwc_with_one_channel(self) -> InputSpec:
        if len(self.shape) != 4 or self.shape[0] is not None or self.shape[3] != 1:
            raise ValueError(f"input shape must be [null, height, width, 1], not {self.shape}")
        if any(size is None or size < 1 for size in self.shape[1:]):
            raise ValueError(f"input height and width must be positive, not {self.shape}")
        return self

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of one image."""
        height, width = self.shape[1], self.shape[2]
        assert height is not None and width is not None  # Checked by the validator.
        return height, width


class PreprocessingSpec(BaseModel):
    """How uploads become model input; ``canvas`` is the input's side, copied from ``input``."""

    default: PreprocessMethod
    invert: InvertPolicy = "auto"
    digit_box: int = 20
    canvas: int = 0


class FeatureMapSpec(BaseModel):
    """One conv/pool layer exported as an extra output, activations (H, W, C)."""

    layer: str
    output: str
    kind: str
    shape: list[int]


class ReliabilitySpec(BaseModel):
    """When a prediction can be trusted (``training/reliability.py``): the temperature that
    calibrates the probabilities, and the class-centre distance model in ``file``."""

    file: str
    sha256: str
    feature_output: str
    temperature: float = Field(gt=0)
    min_confidence: float = Field(ge=0, le=1)
    max_distance: float = Field(gt=0)


class ExplainersSpec(BaseModel):
    """The gradient graph behind the gradient explanation methods (``training/explainers.py``):
    ``file`` takes images and targets and returns the target logit, its input gradient and
    Grad-CAM over ``gradcam_layer``."""

    file: str
    sha256: str
    methods: list[str]
    gradcam_layer: str | None = None  # None: no convolution, no Grad-CAM


class FilesSpec(BaseModel):
    onnx: str
    sha256: str


class ModelCard(BaseModel):
    """The parts of ``model.json`` the service relies on; the whole document is kept in ``raw``."""

    model_config = ConfigDict(extra="ignore")

    name: str
    version: str
    input: InputSpec
    preprocessing: PreprocessingSpec
    labels: list[str]
    outputs: dict[str, str]
    feature_maps: list[FeatureMapSpec]
    files: FilesSpec
    reliability: ReliabilitySpec | None = None
    explainers: ExplainersSpec | None = None
    raw: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_image_size(self) -> ModelCard:
        height, width = self.input.image_size
        if height != width:
            raise ValueError(f"square images only, not {height}x{width}")
        if self.preprocessing.canvas not in (0, height):
            raise ValueError(
                f"preprocessing.canvas {self.preprocessing.canvas} contradicts input {height}"
            )
        self.preprocessing.canvas = height
        if "probabilities" not in self.outputs:
            raise ValueError("outputs must name the 'probabilities' output")
        return self

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ModelCard:
        """Validate a parsed ``model.json``.

        Raises:
            pydantic.ValidationError: the document lacks or mistypes a field the service needs.
        """
        return cls.model_validate({**document, "raw": document})

    @property
    def probabilities_output(self) -> str:
        return self.outputs["probabilities"]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.input.image_size

    def feature_map_layer(self, output: str) -> str:
        """The layer whose activations are the ONNX output ``output``."""
        return next((spec.layer for spec in self.feature_maps if spec.output == output), output)

    def feature_map(self, layer: str) -> FeatureMapSpec | None:
        return next((spec for spec in self.feature_maps if spec.layer == layer), None)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
