"""Request options (``top_k``, ``preprocess``, ``layers``, ``format``): parsed once, at the edge.

The same models validate options from every place a client can put them (a JSON body, the query
string, multipart form fields) and document them in the OpenAPI schema, so what is enforced and
what is documented cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from model_card import PreprocessMethod
from service.errors import InvalidInputError
from service.numbers import whole_number


def _whole_number_text(value: Any) -> Any:
    """A query string or form field carries text: accept plain ASCII digits only."""
    if isinstance(value, str):
        number = whole_number(value)
        if number is None:
            raise ValueError("must be a whole number")
        return number
    return value


class PredictOptions(BaseModel):
    """Options of /predict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: Annotated[int | None, Field(ge=1, strict=True)] = Field(
        None, description="Return only the k most likely classes (at most the number of labels)."
    )
    preprocess: PreprocessMethod | None = Field(
        None,
        description="mnist: crop, normalise strokes and centre like MNIST; resize: pad and "
        "resize; none: a 28x28 image as is. Default: the model's own for images, none for arrays.",
    )

    _top_k_text = field_validator("top_k", mode="before")(_whole_number_text)


class FeatureMapOptions(PredictOptions):
    """Options of /feature-maps."""

    layers: list[str] | None = Field(
        None,
        description="Layers to return (default: all); a list, or names separated by commas.",
    )
    format: Literal["json", "png"] | None = Field(
        None, description="png returns one picture of every channel (Accept: image/png works too)."
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            names = [name.strip() for item in value for name in item.split(",")]
            return [name for name in names if name] or None
        return value


class ExplainOptions(PredictOptions):
    """Options of /explain."""

    target: Annotated[int | None, Field(ge=0, strict=True)] = Field(
        None, description="The class index to explain (default: each image's predicted class)."
    )
    method: Literal["integrated_gradients", "gradcam", "occlusion"] | None = Field(
        None,
        description="integrated_gradients: the target logit's gradient integrated from a black "
        "image (adds up to the logit's change); gradcam: the last convolution's evidence; "
        "occlusion: the drop of the target's log-probability when a 5x5 patch is blanked "
        "(forward runs only: every model has it). Default: the model's first (GET "
        "/models/{name}: explanations).",
    )
    format: Literal["json", "png"] | None = Field(
        None,
        description="png: the saliency over what the model saw, red for the target, blue "
        "against it (one image; Accept: image/png works too).",
    )

    _target_text = field_validator("target", mode="before")(_whole_number_text)


OPTION_FIELDS = frozenset(FeatureMapOptions.model_fields) | frozenset(ExplainOptions.model_fields)
"""Every option name, of any route: what a JSON body may hold besides its data."""


OptionsT = TypeVar("OptionsT", bound=PredictOptions)


def parse_options(model: type[OptionsT], sources: list[tuple[str, Mapping[str, Any]]]) -> OptionsT:
    """Validate options given in several places; later sources override earlier ones.

    Args:
        sources: (location, options) pairs such as ("query", {...}), ("body", {...}).

    Raises:
        InvalidInputError: an unknown option or a bad value, with its location (422).
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for location, values in sources:
        for name, value in values.items():
            merged[name], origin[name] = value, location
    try:
        return model.model_validate(merged)
    except ValidationError as error:
        details = [
            {
                "location": [origin.get(str(item["loc"][0]), "body"), *item["loc"]]
                if item["loc"]
                else ["body"],
                "message": item["msg"],
            }
            for item in error.errors(include_url=False, include_input=False)
        ]
        first = details[0]
        raise InvalidInputError(
            f"invalid option {'.'.join(map(str, first['location'][1:]))}: {first['message']}",
            details=details,
        ) from None
