"""One ONNX Runtime session per model: load, predict, feature maps. No web framework here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_card import FeatureMapSpec, ModelCard, sha256_of
from service.batching import DynamicBatcher
from service.errors import InvalidInputError, ModelLoadError
from service.reliability import DistanceModel, calibrated
from service.repository import read_model_card


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """Options for sharing a few cores with a web server: fixed threads, no spinning."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = True
    # Spinning threads would burn the cores the event loop needs between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


@dataclass(frozen=True)
class FeatureMaps:
    """The probabilities and chosen layer activations for a batch.

    ``probabilities`` is float32 (N, classes); each ``layers[name]`` is float32 (N, H, W, C).
    """

    probabilities: np.ndarray
    layers: dict[str, np.ndarray]


@dataclass(frozen=True)
class Gradients:
    """The gradient graph's outputs for a batch: ``logit`` float32 (N,), the target's score
    before the softmax; ``input`` float32 (N, H, W, 1), its gradient with respect to the input;
    ``gradcam`` float32 (N, h, w), Grad-CAM over the last convolution."""

    logit: np.ndarray
    input: np.ndarray
    gradcam: np.ndarray


@dataclass(frozen=True)
class Scored:
    """A batch's predictions and what says whether to trust them; sliced by rows like an array.

    ``probabilities``: float32 (N, classes), the model's own output; ``calibrated``: the same,
    temperature-scaled (equal to it without a reliability model); ``distances``: float32 (N,)
    from the nearest class centre, or None without a distance model.
    """

    probabilities: np.ndarray
    calibrated: np.ndarray
    distances: np.ndarray | None

    def __getitem__(self, rows: slice) -> Scored:
        distances = None if self.distances is None else self.distances[rows]
        return Scored(self.probabilities[rows], self.calibrated[rows], distances)


class ModelRuntime:
    """A loaded, checked and warmed-up model.

    Args:
        model_dir: the folder of its ``model.json``.
        intra_op_threads: ONNX Runtime threads for one run.
        version: the repository's version of it (its folder's number), which the card then
            reports; None keeps the card's own.
    """

    def __init__(self, model_dir: Path, intra_op_threads: int, version: int | None = None) -> None:
        card = read_model_card(model_dir)
        self.card: ModelCard = (
            card if version is None else card.model_copy(update={"version": str(version)})
        )
        # The dynamic batcher that queues this version's runs, once it serves.
        self.batcher: DynamicBatcher[Scored] | None = None
        spec = self.card.reliability
        self.distance_model = None if spec is None else DistanceModel.load(model_dir, spec)
        try:
            self._session = ort.InferenceSession(
                str(model_dir / self.card.files.onnx),
                sess_options=session_options(intra_op_threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as error:  # onnxruntime raises its own untyped errors.
            raise ModelLoadError(f"onnxruntime cannot load {model_dir}: {error}") from error
        self._check_signature()
        self.warm_up()
        self._explainer = self._load_explainer(model_dir, intra_op_threads)

    @property
    def name(self) -> str:
        return self.card.name

    def _load_explainer(
        self, model_dir: Path, intra_op_threads: int
    ) -> ort.InferenceSession | None:
        """The gradient graph of ``card.explainers``, checked against its sha256, or None.

        Raises:
            ModelLoadError: the file is missing, altered or not a gradient graph.
        """
        spec = self.card.explainers
        if spec is None:
            return None
        path = model_dir / spec.file
        if not path.is_file() or sha256_of(path) != spec.sha256:
            raise ModelLoadError(f"{path} is missing or does not match its sha256 in model.json")
        try:
            session = ort.InferenceSession(
                str(path),
                sess_options=session_options(intra_op_threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as error:  # onnxruntime raises its own untyped errors.
            raise ModelLoadError(f"onnxruntime cannot load {path}: {error}") from error
        names = {item.name for item in session.get_outputs()}
        if not {"target_logit", "input_gradient", "gradcam"} <= names:
            raise ModelLoadError(f"{path} is not a gradient graph (outputs {sorted(names)})")
        return session

    @property
    def explanation_methods(self) -> list[str]:
        """What ``/explain`` offers for this model: occlusion always, gradient methods when
        the model has its gradient graph."""
        gradients = [] if self.card.explainers is None else self.card.explainers.methods
        return [*gradients, "occlusion"]

    def gradients(self, images: np.ndarray, targets: np.ndarray) -> Gradients:
        """One run of the gradient graph.

        Args:
            images: float32 (N, H, W, 1); targets: int64 (N,).
        """
        assert self._explainer is not None, f"{self.name} has no gradient graph"
        logit, gradient, gradcam = self._explainer.run(
            ["target_logit", "input_gradient", "gradcam"], {"images": images, "targets": targets}
        )
        return Gradients(logit, gradient, gradcam)

    def _check_signature(self) -> None:
        inputs = {item.name for item in self._session.get_inputs()}
        outputs = {item.name for item in self._session.get_outputs()}
        expected = {
            self.card.probabilities_output,
            *(spec.output for spec in self.card.feature_maps),
        }
        if self.card.input.name not in inputs or not expected <= outputs:
            raise ModelLoadError(
                f"{self.name}: the ONNX graph (inputs {sorted(inputs)}, outputs {sorted(outputs)}) "
                "does not match model.json"
            )

    def warm_up(self) -> None:
        """Run one batch so that the first request does not pay for allocations.

        Raises:
            ModelLoadError: the model's output is not one finite row of class probabilities.
        """
        height, width = self.card.image_size
        probabilities = self.predict(np.zeros((1, height, width, 1), dtype=np.float32))
        if (
            probabilities.shape != (1, len(self.card.labels))
            or not np.isfinite(probabilities).all()
        ):
            raise ModelLoadError(f"{self.name}: warm-up produced {probabilities!r}")

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch.

        Args:
            images: float32 (N, H, W, 1) in [0, 1], light ink on dark (H, W from the card).

        Returns:
            float32 (N, classes), each row summing to 1.
        """
        (probabilities,) = self._session.run(
            [self.card.probabilities_output], {self.card.input.name: images}
        )
        return np.asarray(probabilities)

    def predict_scored(self, images: np.ndarray) -> Scored:
        """Probabilities, calibrated probabilities and class-centre distances for a batch.

        Args:
            images: float32 (N, H, W, 1) in [0, 1].
        """
        spec = self.card.reliability
        if spec is None:
            probabilities = self.predict(images)
            return Scored(probabilities, probabilities, None)
        probabilities, features = self._session.run(
            [self.card.probabilities_output, spec.feature_output], {self.card.input.name: images}
        )
        return self.scored(np.asarray(probabilities), np.asarray(features))

    def scored(self, probabilities: np.ndarray, features: np.ndarray | None) -> Scored:
        """Calibrate ``probabilities`` (N, classes) and measure the distance of ``features``
        (N, ...), the card's reliability feature map, when there is one."""
        spec = self.card.reliability
        if spec is None:
            return Scored(probabilities, probabilities, None)
        distances = None
        if features is not None and self.distance_model is not None:
            flat = features.reshape(features.shape[0], -1).astype(np.float32, copy=False)
            distances = self.distance_model.distances(flat)
        return Scored(probabilities, calibrated(probabilities, spec.temperature), distances)

    def feature_maps(self, images: np.ndarray, layers: list[str] | None = None) -> FeatureMaps:
        """Probabilities plus the activations of the named conv/pool layers (default: all).

        Args:
            images: float32 (N, H, W, 1).
            layers: layer names from ``card.feature_maps``.
        """
        specs = self.card.feature_maps if layers is None else [self._layer(name) for name in layers]
        output_names = [self.card.probabilities_output, *(spec.output for spec in specs)]
        results = self._session.run(output_names, {self.card.input.name: images})
        return FeatureMaps(
            probabilities=np.asarray(results[0]),
            layers={
                spec.layer: np.asarray(values)
                for spec, values in zip(specs, results[1:], strict=True)
            },
        )

    def _layer(self, name: str) -> FeatureMapSpec:
        spec = self.card.feature_map(name)
        if spec is None:
            known = [item.layer for item in self.card.feature_maps]
            raise InvalidInputError(
                f"unknown layer {name!r} for model {self.name}", details={"known_layers": known}
            )
        return spec
