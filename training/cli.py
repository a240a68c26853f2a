"""Command line: ``python -m training COMMAND [options]`` (``python -m training COMMAND --help``).

Train, evaluate and export a model of your own (the shipped models stay untouched)::

    python -m training all --name my-deep-cnn --data path/to/mnist --augment drawings

``--data`` is a directory of the four MNIST IDX files (``train-images-idx3-ubyte`` and the
others, gzipped or not) or an ``mnist.npz``; without it, MNIST is downloaded once by
``keras.datasets.mnist.load_data()`` (into ``~/.keras/datasets/mnist.npz``).
``scripts/train_shipped_models.sh`` reproduces the shipped models (it passes ``--force``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.errors import ModelLoadError
from service.repository import publish_version
from training.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE
from training.augmentation import AUGMENTATIONS
from training.data import DATASETS, VALIDATION_SIZE, DatasetError, Splits
from training.drawings import DEFAULT_CORPUS, record_drawings_accuracy
from training.explainers import (
    ExplanationCheckError,
    UnsupportedArchitectureError,
    export_explainers,
    keras_model_from_onnx,
)
from training.export import MIN_VERIFY_IMAGES, ExportCheckError
from training.pipeline import load_splits, load_trained, run_evaluate, run_export, run_train
from training.quantize import QuantizationRejectedError, quantize_model
from training.reliability import fit_reliability
from training.train import TrainConfig

CHECK_IMAGES = 200  # Test images the gradient graph is checked on.
COMMANDS = {
    "train": "train a model into runs/<name> (Keras), with learning curves",
    "evaluate": "evaluate runs/<name> on the test set: metrics, confusion matrix, misclassified",
    "export": "export runs/<name> to ONNX in models/<name>, checked against Keras",
    "all": "train, evaluate and export in one go (what most people want)",
    "quantize": "make models/<name><suffix>: an int8 copy, refused if it loses accuracy",
    "drawings": "measure models/<name> on a drawings corpus and record it in model.json",
    "reliability": "refit models/<name>'s calibration and distance model (reliability.npz)",
    "explainers": "export models/<name>'s gradient graph (integrated gradients, Grad-CAM), "
    "checked against tf.GradientTape",
    "publish": "copy an exported model into models/<name>/<next version>/, atomically, for a "
    "running service to pick up",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, summary in COMMANDS.items():
        sub = commands.add_parser(command, help=summary, description=summary)
        sub.add_argument(
            "--name",
            default="my-model",
            help="model name: runs/<name>, models/<name> (the shipped models are only "
            "replaced with --force)",
        )
        sub.add_argument("--dataset", choices=DATASETS, default="mnist")
        sub.add_argument(
            "--data",
            type=Path,
            default=None,
            help="IDX directory or mnist.npz (default: Keras download for MNIST, "
            "the Debian package for Fashion-MNIST)",
        )
        sub.add_argument("--runs-dir", type=Path, default=Path("runs"))
        sub.add_argument("--models-dir", type=Path, default=Path("models"))
        sub.add_argument(
            "--validation-size",
            type=int,
            default=VALIDATION_SIZE,
            help="last training images held out for validation",
        )
        if command in ("train", "all"):
            sub.add_argument(
                "--architecture", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCHITECTURE
            )
            sub.add_argument("--epochs", type=int, default=15)
            sub.add_argument("--batch-size", type=int, default=128)
            sub.add_argument("--optimizer", default="adam")
            sub.add_argument("--learning-rate", type=float, default=1e-3)
            sub.add_argument("--seed", type=int, default=42)
            sub.add_argument(
                "--augment",
                choices=AUGMENTATIONS,
                nargs="?",
                const="light",
                default="none",
                help="light: small shifts/rotations/zooms (--augment alone); drawings: also "
                "stroke-width changes and elastic distortions, for real drawings; photos: also "
                "dotted and broken strokes, fading ink and continental 1s and 7s",
            )
            sub.add_argument(
                "--initial-weights",
                metavar="MODEL_DIR",
                help="fine-tune: start from an exported model's weights (models/<name>, same "
                "architecture) instead of random ones",
            )
            sub.add_argument("--reduce-lr-patience", type=int, default=2)
            sub.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="plateau")
            sub.add_argument("--early-stopping-patience", type=int, default=4)
            sub.add_argument("--limit-train-samples", type=int, default=None)
        if command == "quantize":
            sub.add_argument("--suffix", default="-int8", help="models/<name><suffix>")
        if command in ("all", "quantize", "drawings"):
            sub.add_argument(
                "--corpus",
                type=Path,
                default=DEFAULT_CORPUS,
                help="drawings corpus to measure MNIST models on (recorded in model.json)",
            )
        if command in ("export", "all", "quantize"):
            sub.add_argument(
                "--force", action="store_true", help="replace an existing models/<name>"
            )
        if command in ("export", "all"):
            sub.add_argument("--version", default="1")
            sub.add_argument("--verify-images", type=int, default=MIN_VERIFY_IMAGES)
            sub.add_argument(
                "--publish",
                action="store_true",
                help="write models/<name>/<next version>/ (atomically) instead of replacing "
                "models/<name>: a running service loads it within CNN_SERVE_REPOSITORY_POLL_S",
            )
        if command == "publish":
            sub.add_argument(
                "--source",
                type=Path,
                default=None,
                help="the exported model folder to publish (default: models/<name>, flat)",
            )
            sub.add_argument(
                "--version", type=int, default=None, help="version number (default: the next)"
            )
            sub.add_argument(
                "--force", action="store_true", help="replace that version if it exists"
            )
    return parser


class ModelExistsError(ValueError):
    """The target model directory already holds a model and --force was not given."""


def _check_target(model_dir: Path, force: bool) -> None:
    """Refuse to replace a model (the shipped ones included) unless asked to, before any work."""
    if (model_dir / "model.json").exists() and not force:
        raise ModelExistsError(
            f"{model_dir} already holds a model; choose another --name, or pass --force to "
            "replace it"
        )


def _warn_about_stale_variants(model_dir: Path) -> None:
    """Variants made from a replaced model (its int8 version) no longer match it: say so."""
    for card_path in sorted(model_dir.parent.glob("*/model.json")):
        card = json.loads(card_path.read_text())
        if card.get("quantization", {}).get("source_model") == model_dir.name:
            print(
                f"warning: {card_path.parent} was made from the model just replaced and is now "
                f"stale; re-run: python -m training quantize --name {model_dir.name} --force",
                file=sys.stderr,
            )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        architecture=args.architecture,
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        seed=args.seed,
        augment=args.augment,
        early_stopping_patience=args.early_stopping_patience,
        reduce_lr_patience=args.reduce_lr_patience,
        lr_schedule=args.lr_schedule,
        limit_train_samples=args.limit_train_samples,
        initial_weights=args.initial_weights,
    )


def _fit_reliability(model_dir: Path, splits: Splits, dataset: str) -> None:
    """Calibrate the exported model and fit its distance from the training digits."""
    entry = fit_reliability(
        model_dir, (splits.x_train, splits.y_train), (splits.x_val, splits.y_val), dataset
    )
    print(
        f"reliability: T = {entry['temperature']}, validation ECE "
        f"{entry['validation_ece_before']} -> {entry['validation_ece_after']}"
    )


def _quantize(args: argparse.Namespace) -> None:
    target = args.models_dir / f"{args.name}{args.suffix}"
    _check_target(target, args.force)
    splits = load_splits(TrainConfig(dataset=args.dataset), args.data, args.validation_size)
    quantize_model(args.models_dir / args.name, target, splits)
    _fit_reliability(target, splits, args.dataset)
    if args.dataset == "mnist" and args.corpus.is_dir():
        record_drawings_accuracy(target, args.corpus)


def _explainers(args: argparse.Namespace) -> None:
    """For a model already exported (its Keras run may be gone: rebuilt from its ONNX file)."""
    model_dir = args.models_dir / args.name
    architecture = json.loads((model_dir / "model.json").read_text())["architecture"]
    model = keras_model_from_onnx(model_dir, architecture)
    splits = load_splits(TrainConfig(dataset=args.dataset), args.data, args.validation_size)
    entry = export_explainers(model, model_dir, splits.x_test[:CHECK_IMAGES])
    difference = entry["verification"]["max_relative_gradient_difference_vs_gradient_tape"]
    print(f"{model_dir / entry['file']}: gradients within {difference:.1g} of GradientTape")


def _publish(source: Path, args: argparse.Namespace, version: int | None = None) -> None:
    number = publish_version(source, args.models_dir / args.name, version, replace=args.force)
    print(f"published {args.models_dir / args.name / str(number)}")


def _train_evaluate_export(args: argparse.Namespace) -> None:
    run_dir = args.runs_dir / args.name
    publishing = getattr(args, "publish", False)
    # Published: exported beside the run first, then copied into the repository in one step.
    model_dir = (run_dir / "publish" if publishing else args.models_dir) / args.name
    if args.command in ("export", "all") and not publishing:
        _check_target(model_dir, args.force)
    if args.command in ("train", "all"):
        config = _train_config(args)
        splits = load_splits(config, args.data, args.validation_size)
        model = run_train(config, splits, run_dir)
    else:
        splits = load_splits(TrainConfig(dataset=args.dataset), args.data, args.validation_size)
        model = load_trained(run_dir)
    if args.command in ("evaluate", "all"):
        run_evaluate(model, splits, run_dir)
    if args.command in ("export", "all"):
        run_export(model, splits, run_dir, model_dir, args.version, args.verify_images)
        _fit_reliability(model_dir, splits, args.dataset)
        if args.dataset == "mnist" and args.corpus.is_dir():
            record_drawings_accuracy(model_dir, args.corpus)
        if publishing:
            _publish(model_dir, args)
        else:
            _warn_about_stale_variants(model_dir)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "drawings":
            record_drawings_accuracy(args.models_dir / args.name, args.corpus)
        elif args.command == "reliability":
            splits = load_splits(TrainConfig(dataset=args.dataset), args.data, args.validation_size)
            _fit_reliability(args.models_dir / args.name, splits, args.dataset)
        elif args.command == "quantize":
            _quantize(args)
        elif args.command == "explainers":
            _explainers(args)
        elif args.command == "publish":
            _publish(args.source or args.models_dir / args.name, args, args.version)
        else:
            _train_evaluate_export(args)
    except (
        DatasetError,
        ExportCheckError,
        QuantizationRejectedError,
        FileNotFoundError,
        ValueError,
        ModelLoadError,
        OSError,
        ExplanationCheckError,
        UnsupportedArchitectureError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
