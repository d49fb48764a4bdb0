"""``loopseg``: the command line, calling the same core functions as the napari widgets."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .core.cpu_features import PRECISIONS
from .core.options import (
    AUTO_SIZE,
    DEFAULT_BLOCK,
    DEFAULT_MODEL,
    DEFAULT_TILE,
    DEVICES,
    MAX_STEPS,
    MIN_STEPS,
    SegmentOptions,
)
from .progress_log import LineLog

EXIT_FAILED = 1
EXIT_USAGE = 2
#: ``--object-size`` value that segments images at their own scale.
AS_IS = "none"
PRECISION_HELP = (
    "auto (default): bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX, arm64 BF16), "
    "else fp32; $LOOPSEG_PRECISION replaces auto"
)


def _error(message: str) -> None:
    print(f"loopseg: error: {message}", file=sys.stderr)


def _segment(args: argparse.Namespace) -> int:
    from .core.batch import expand_paths
    from .core.registry import ModelError, load_model
    from .core.zarr_io import is_zarr

    try:
        model = load_model(args.model)
    except ModelError as err:
        _error(str(err))
        return EXIT_USAGE
    paths = expand_paths(args.paths)
    if not paths:
        _error(f"no TIFF, PNG or JPEG images in {', '.join(map(str, args.paths))}")
        return EXIT_USAGE
    if any(is_zarr(p) for p in paths):
        if not all(is_zarr(p) for p in paths):
            _error("segment zarr stores on their own, not mixed with other files")
            return EXIT_USAGE
        unsupported = {
            "--object-size": args.object_size not in (None, AS_IS),
            "--overlap": args.overlap is not None,
            "--batch-size": args.batch_size is not None,
            "--channel-axis": args.channel_axis is not None,
        }
        given = [flag for flag, used in unsupported.items() if used]
        if given:
            _error(f"{', '.join(given)} not supported for zarr stores (segmented block by block) yet")
            return EXIT_USAGE
        if args.object_size is None:
            print("loopseg: zarr stores are segmented at their own scale (no size estimate)", file=sys.stderr)
        return _segment_zarr(args, paths, model)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _error(f"--out {args.out}: cannot use it as the output folder ({err.strerror or err})")
        return EXIT_USAGE
    if args.scheduler or args.workers is not None:
        return _segment_files_on_cluster(args, paths, model)
    return _segment_files(args, paths, model)


def _segment_files(args: argparse.Namespace, paths: list[Path], model) -> int:
    """Files one after another in this process (every thread on each image)."""
    from .core.batch import segment_files_here

    return _report_files(args, paths, segment_files_here(paths, args.out, model, _file_settings(args)))


def _report_files(args: argparse.Namespace, paths: list[Path], events) -> int:
    """The one loop both file paths report through: progress bar (or log lines when the output is
    not a terminal), each failed file named, a summary line; exit 1 if any file failed."""
    from tqdm import tqdm

    from .core.batch import FileResult

    failed = done = 0
    lines = LineLog()
    lines(f"images 0/{len(paths)} done", 0.0)
    bar_format = "{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]"
    with tqdm(total=len(paths), unit="image", disable=None, bar_format=bar_format) as bar:
        for event in events:
            if isinstance(event, FileResult):
                done += 1
                if event.error:
                    failed += 1
                    bar.clear()
                    _error(event.error)
                bar.n = done
                bar.refresh()
                lines(f"images {done}/{len(paths)} done", done / len(paths))
                continue
            index, progress = event
            bar.set_description(paths[index].name, refresh=False)
            bar.n = done + progress.fraction
            bar.refresh()
            text = f"images {done}/{len(paths)} done, {paths[index].name} {progress.stage}"
            lines(text, (done + progress.fraction) / len(paths))
    print(f"segmented {len(paths) - failed} of {len(paths)} image(s) into {args.out}", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def _object_size(text: str) -> float | str:
    if text in (AUTO_SIZE, AS_IS):
        return text
    try:
        size = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a diameter in pixels or 'auto', not {text!r}") from None
    if not size > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return size


def _object_size_option(given: float | str | None) -> float | str | None:
    """What ``--object-size`` asks of SegmentOptions: its default when not given, None for 'none'."""
    if given is None:
        return SegmentOptions.object_size
    return None if given == AS_IS else given


def _segment_options(args: argparse.Namespace) -> dict:
    return {
        "object_size": _object_size_option(args.object_size),
        "device": args.device,
        "tile_size": args.tile_size,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "precision": args.precision,
    }


def _segment_files_on_cluster(args: argparse.Namespace, paths: list[Path], model) -> int:
    """One dask task per file on a local cluster or a running scheduler."""
    from contextlib import ExitStack

    from .core.batch import segment_files_iter

    with ExitStack() as stack:
        client = _client(args, stack)
        if client is None:
            return EXIT_USAGE
        name = str(model.path or model.name)
        results = segment_files_iter(paths, args.out, name, client, _file_settings(args))
        return _report_files(args, paths, results)


def _file_settings(args: argparse.Namespace) -> dict:
    """What :func:`napari_loopseg.core.batch.segment_file_iter` needs besides the file."""
    return {**_segment_options(args), "channel_axis": args.channel_axis, "channel": args.channel}


def _client(args: argparse.Namespace, stack):
    """A dask.distributed Client for --scheduler or --workers (None and a message if unavailable)."""
    try:
        import distributed
    except ImportError:
        _error("--scheduler and --workers need dask.distributed: pip install 'napari-loopseg[cluster]'")
        return None
    logging.getLogger("distributed").setLevel(logging.ERROR)  # shutdown chatter is not news
    if args.scheduler:
        try:
            return stack.enter_context(distributed.Client(args.scheduler, timeout="10s"))
        except OSError as err:
            _error(f"cannot reach the dask scheduler at {args.scheduler}: {err}")
            return None
    from .core.cluster import local_cluster

    cluster = stack.enter_context(local_cluster(args.workers))
    return stack.enter_context(distributed.Client(cluster))


def _segment_zarr(args: argparse.Namespace, paths: list[Path], model) -> int:
    """Zarr / OME-Zarr images larger than memory: block by block on dask (threads or a cluster).
    OME-Zarr outputs get overview levels; a failed or interrupted output is removed."""
    import shutil
    from contextlib import ExitStack

    from tqdm import tqdm

    from .core.bigdata import segment_large_iter
    from .core.normalize import InputError
    from .core.predict import DeviceError
    from .core.progress import drive
    from .core.zarr_io import add_pyramid, create_labels, open_image

    failed = 0
    lines = LineLog()
    with ExitStack() as stack:
        scheduler = "threads"
        if args.scheduler or args.workers is not None:
            scheduler = _client(args, stack)
            if scheduler is None:
                return EXIT_USAGE
        for done, path in enumerate(paths):
            destination = args.out if args.out.suffix == ".zarr" and len(paths) == 1 else args.out / path.name
            created = False
            bar = tqdm(total=1.0, desc=path.name, disable=None, bar_format="{l_bar}{bar}| {postfix}")
            try:
                image, meta = open_image(path)
                labels = create_labels(destination, image.shape, args.block_size, meta)
                created = True

                def advance(progress, bar=bar, done=done, name=path.name) -> None:
                    bar.n = progress.fraction
                    bar.set_postfix_str(progress.stage, refresh=True)
                    fraction = (done + progress.fraction) / len(paths)
                    lines(f"images {done}/{len(paths)} done, {name} {progress.stage}", fraction)

                gen = segment_large_iter(
                    image,
                    model=model,
                    block_size=args.block_size,
                    scheduler=scheduler,
                    out=labels,
                    device=args.device,
                    precision=args.precision,
                    tile_size=args.tile_size,
                )
                drive(gen, advance)
                if meta is not None:
                    bar.set_postfix_str("writing overview levels", refresh=True)
                    add_pyramid(destination)
                bar.close()
                print(f"segmented {path} into {destination}", file=sys.stderr)
            except (InputError, DeviceError, OSError) as err:
                failed += 1
                bar.close()
                _error(str(err))
                if created:
                    shutil.rmtree(destination, ignore_errors=True)
            except BaseException:  # interrupted: no half-written output left behind
                bar.close()
                if created:
                    shutil.rmtree(destination, ignore_errors=True)
                raise
    return EXIT_FAILED if failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from .core.imageio import read_image
    from .core.metrics import Counts
    from .core.normalize import InputError

    for folder in (args.pred_dir, args.gt_dir):
        if not folder.is_dir():
            _error(f"{folder}: no such folder")
            return EXIT_USAGE
    preds = {p.stem: p for p in sorted(args.pred_dir.glob("*.tif*"))}
    truths = {p.stem: p for p in sorted(args.gt_dir.glob("*.tif*"))}
    if args.ids is not None:
        try:
            lines = args.ids.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            _error(f"--ids {args.ids}: cannot read it ({err})")
            return EXIT_USAGE
        wanted = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
        unknown = sorted(wanted - truths.keys())
        if unknown:
            _error(
                f"--ids {args.ids}: {len(unknown)} name(s) have no ground truth in {args.gt_dir}, "
                f"e.g. {unknown[0]}"
            )
            return EXIT_USAGE
        truths = {k: v for k, v in truths.items() if k in wanted}
    common = sorted(preds.keys() & truths.keys())
    if not common:
        _error(f"no file names in common between {args.pred_dir} and {args.gt_dir}")
        return EXIT_USAGE
    missing = sorted(truths.keys() - preds.keys())
    if missing and not args.allow_missing:
        _error(
            f"{len(missing)} ground-truth image(s) have no prediction, e.g. {missing[0]}; "
            "pass --allow-missing to score the others"
        )
        return EXIT_FAILED
    counts = Counts()
    for stem in common:
        try:
            truth, pred = read_image(truths[stem]), read_image(preds[stem])
            counts.add(truth, pred)
        except (InputError, ValueError) as err:
            _error(f"{stem}: {err}")
            return EXIT_FAILED
    summary = counts.summary()
    print(f"images: {len(common)}  true objects: {counts.tp[0.5] + counts.fn[0.5]}")
    print(f"AP@0.50: {summary['ap50']:.4f}")
    print(f"AP@0.75: {summary['ap75']:.4f}")
    print(f"mean AP@0.50:0.95: {summary['map']:.4f}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core.errors import InputError, LoopSegError
    from .core.finetune import finetune
    from .core.imageio import guess_layout, read_image

    masks = args.masks or [None] * len(args.images)
    if not (len(args.images) == len(args.labels) == len(masks)):
        _error(
            f"give as many --labels (and --masks) as --images: {len(args.images)} images, "
            f"{len(args.labels)} labels, {len(args.masks or [])} masks"
        )
        return EXIT_USAGE
    try:
        images = [read_image(p) for p in args.images]
        labels = [read_image(p) for p in args.labels]
        masks = [None if m is None else read_image(m) > 0 for m in masks]
        layouts = {guess_layout(i.shape).rgb for i in images}
        if len(layouts) > 1:
            raise InputError("mix of RGB and grey images: fine-tune on one kind at a time")
        given = (("steps", args.steps), ("device", args.device), ("precision", args.precision))
        overrides = {k: v for k, v in given if v is not None}
        lines = LineLog()
        with tqdm(total=overrides.get("steps"), unit="step", disable=None) as bar:

            def advance(progress) -> None:
                bar.total = progress.steps
                bar.update(1)
                bar.set_postfix(loss=f"{progress.loss:.4f}")
                text = f"step {progress.step}/{progress.steps}, loss {progress.loss:.4f}"
                lines(text, progress.step / progress.steps)

            model = finetune(
                images,
                labels,
                masks,
                base=args.base,
                name=args.name,
                rgb=layouts.pop(),
                on_progress=advance,
                **overrides,
            )
    except (LoopSegError, OSError) as err:
        _error(str(err))
        return EXIT_FAILED
    print(f"{model.name}\t{model.path}")
    return 0


def _unseen_ap50(metrics: dict) -> float | None:
    """The figure that predicts new images best: held-out acquisition groups (bundled models), else
    the old val split, else a fine-tune's validation images."""
    for name in ("dsb2018_heldout", "dsb2018_val", "validation"):
        if isinstance(metrics.get(name), dict) and "ap50" in metrics[name]:
            return float(metrics[name]["ap50"])
    return None


def _models(args: argparse.Namespace) -> int:
    from .core.registry import ModelError, bundled_dir, load_path, model_paths

    rows = []
    for name, path in model_paths().items():
        try:
            card = load_path(path).card
        except ModelError as err:
            _error(str(err))
            continue
        source = "bundled" if path.parent == bundled_dir() else "user"
        unseen = _unseen_ap50(card.get("metrics", {}))
        rows.append(
            (name, source, card.get("parent") or "-", "-" if unseen is None else f"{unseen:.3f}", str(path))
        )
    header = ("name", "source", "parent", "AP@0.5 unseen", "path")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from .core.bench import row_text, run
    from .core.errors import LoopSegError

    def show(row: dict) -> None:  # stderr, at once: the JSON may go to stdout
        print(row_text(row), file=sys.stderr, flush=True)

    try:
        result = run(args.sizes, args.model, args.device, args.repeats, args.precision, on_row=show)
    except LoopSegError as err:
        _error(str(err))
        return EXIT_FAILED
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopseg", description="Segment nuclei with LoopSeg's U-Net.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment images into instance label TIFFs")
    seg.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="TIFF, PNG or JPEG images, folders of them, or Zarr / OME-Zarr stores",
    )
    seg.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for <stem>.tif labels")
    seg.add_argument(
        "--model", default=DEFAULT_MODEL, help="model name (see `loopseg models`) or .safetensors file"
    )
    seg.add_argument(
        "--tile-size",
        type=int,
        default=DEFAULT_TILE,
        metavar="N",
        help=f"largest tile side in pixels (default {DEFAULT_TILE})",
    )
    seg.add_argument(
        "--overlap",
        type=int,
        default=None,
        metavar="N",
        help="halo around each tile (default: the network's receptive field, exact)",
    )
    seg.add_argument("--device", default=SegmentOptions.device, choices=DEVICES)
    seg.add_argument("--precision", default=SegmentOptions.precision, choices=PRECISIONS, help=PRECISION_HELP)
    seg.add_argument(
        "--object-size",
        type=_object_size,
        default=None,
        metavar="PX|auto|none",
        help="typical object diameter in pixels, rescaled to the model's training size; "
        "'auto' (default) estimates it from a first pass; 'none' uses the image as it is",
    )
    seg.add_argument("--batch-size", type=int, default=None, metavar="N", help="tiles per batch")
    seg.add_argument("--channel-axis", type=int, default=None, metavar="A", help="axis holding channels")
    seg.add_argument(
        "--channel", type=int, default=0, metavar="C", help="channel to segment (with --channel-axis)"
    )
    seg.add_argument(
        "--block-size",
        type=int,
        default=DEFAULT_BLOCK,
        metavar="N",
        help=f"zarr inputs: block side for dask (default {DEFAULT_BLOCK})",
    )
    where = seg.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="run on this dask.distributed scheduler"
    )
    where.add_argument(
        "--workers", type=int, default=None, metavar="N", help="run on a local dask cluster of N processes"
    )
    seg.set_defaults(func=_segment)

    ev = sub.add_parser("evaluate", help="AP of predicted labels against ground truth (matched by file name)")
    ev.add_argument("pred_dir", type=Path, metavar="PRED_DIR")
    ev.add_argument("gt_dir", type=Path, metavar="GT_DIR")
    ev.add_argument("--allow-missing", action="store_true", help="score only images present in both")
    ev.add_argument(
        "--ids",
        type=Path,
        default=None,
        metavar="FILE",
        help="score only these images: a text file of file names without extension, one per line",
    )
    ev.set_defaults(func=_evaluate)

    ft = sub.add_parser("finetune", help="fine-tune a model on corrected labels; registers a new version")
    ft.add_argument("--images", nargs="+", type=Path, required=True, metavar="IMAGE")
    ft.add_argument(
        "--labels",
        nargs="+",
        type=Path,
        required=True,
        metavar="LABELS",
        help="corrected instance labels, one per image",
    )
    ft.add_argument(
        "--masks",
        nargs="+",
        type=Path,
        default=None,
        metavar="MASK",
        help="reviewed pixels (non-zero) per image; default: the whole image is correct",
    )
    ft.add_argument("--base", default=DEFAULT_MODEL, help=f"model to start from (default {DEFAULT_MODEL})")
    ft.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help=f"training steps (default: from the reviewed area, {MIN_STEPS} to {MAX_STEPS})",
    )
    ft.add_argument("--name", default=None, help="name of the new version (default <base>-ft-N)")
    ft.add_argument("--device", default=None, choices=DEVICES)
    ft.add_argument("--precision", default=None, choices=PRECISIONS, help=PRECISION_HELP)
    ft.set_defaults(func=_finetune)

    be = sub.add_parser(
        "bench",
        help="speed benchmark on synthetic images (JSON with device and versions)",
        description="Segmentation speed on synthetic nuclei: network only vs end to end (JSON).",
    )
    be.add_argument("--sizes", type=int, nargs="+", default=[512, 2048], metavar="N", help="image sides")
    be.add_argument("--model", default=DEFAULT_MODEL)
    be.add_argument("--device", default=SegmentOptions.device, choices=DEVICES)
    be.add_argument(
        "--precision",
        default=SegmentOptions.precision,
        choices=[*PRECISIONS, "both"],
        help="auto (default) as segment picks it; both: fp32 and, where auto picks one (a GPU, "
        "a CPU with native bf16), that mixed precision side by side",
    )
    be.add_argument("--repeats", type=int, default=2)
    be.add_argument("--out", type=Path, default=None, help="write the JSON here")
    be.set_defaults(func=_bench)

    mod = sub.add_parser("models", help="list bundled and user models")
    mod.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="loopseg: %(message)s"
    )
    for name in ("tile_size", "batch_size", "overlap", "steps", "block_size", "workers"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "overlap" else 1):
            _error(f"--{name.replace('_', '-')} must be positive, got {value}")
            return EXIT_USAGE
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
