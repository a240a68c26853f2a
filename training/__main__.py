"""Command line: ``python -m training {train,evaluate,export,all,quantize} ...``.

Reproduce the shipped default model end to end with::

    python -m training all --name mnist-deep-cnn --data ../shared/data/mnist --augment
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE
from training.augmentation import AUGMENTATIONS
from training.data import DATASETS, VALIDATION_SIZE, DatasetError
from training.drawings import DEFAULT_CORPUS, record_drawings_accuracy
from training.export import MIN_VERIFY_IMAGES, ExportCheckError
from training.pipeline import load_splits, load_trained, run_evaluate, run_export, run_train
from training.quantize import QuantizationRejectedError, quantize_model
from training.train import TrainConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("train", "evaluate", "export", "all", "quantize", "drawings"):
        sub = commands.add_parser(command)
        sub.add_argument(
            "--name", default="mnist-deep-cnn", help="model name: runs/<name>, models/<name>"
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
                "stroke-width changes and elastic distortions, for real drawings and photos",
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
        if command in ("export", "all"):
            sub.add_argument("--version", default="1")
            sub.add_argument("--verify-images", type=int, default=MIN_VERIFY_IMAGES)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = _parser().parse_args(argv)
    run_dir = args.runs_dir / args.name
    try:
        if args.command == "drawings":
            record_drawings_accuracy(args.models_dir / args.name, args.corpus)
            return 0
        if args.command == "quantize":
            splits = load_splits(TrainConfig(dataset=args.dataset), args.data, args.validation_size)
            source = args.models_dir / args.name
            target = args.models_dir / f"{args.name}{args.suffix}"
            quantize_model(source, target, splits)
            if args.dataset == "mnist" and args.corpus.is_dir():
                record_drawings_accuracy(target, args.corpus)
            return 0
        if args.command in ("train", "all"):
            config = TrainConfig(
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
            )
            splits = load_splits(config, args.data, args.validation_size)
            model = run_train(config, splits, run_dir)
        else:
            splits = load_splits(TrainConfig(dataset=args.dataset), args.data, args.validation_size)
            model = load_trained(run_dir)
        if args.command in ("evaluate", "all"):
            run_evaluate(model, splits, run_dir)
        if args.command in ("export", "all"):
            run_export(
                model,
                splits,
                run_dir,
                args.models_dir / args.name,
                args.version,
                args.verify_images,
            )
            if args.command == "all" and args.dataset == "mnist" and args.corpus.is_dir():
                record_drawings_accuracy(args.models_dir / args.name, args.corpus)
    except (
        DatasetError,
        ExportCheckError,
        QuantizationRejectedError,
        FileNotFoundError,
        ValueError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
