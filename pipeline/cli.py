"""`handclr` command line: sample-data, demo, detect, shard, verify, inspect, mano-check, evaluate, embed-report,
sweep."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import HandclrError


def _part(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--part expects i/N (e.g. 3/16), got {text!r}") from exc
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--part {text}: need 0 <= i < N")
    return i, n


def _user_paths(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An OSError on a path the user gave (a file where a directory belongs, no permission, disk full) is
    one clear line, like any other HandclrError, not a traceback."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise HandclrError(f"{where}{exc.strerror or exc}") from exc

    return run


def _print_shard_summary(summary: dict) -> None:
    skips = summary["skips"]
    print(f"clips: {summary['clips_in']} in, {summary['clips_written']} written; samples: {summary['samples']}; "
          f"frames: {summary['frames_in']} in, {summary['frames_written']} written; shards: {summary['shards']}, "
          f"{summary['bytes'] / 2**20:.2f} MiB")
    for kind in ("frames", "clips"):
        for reason, count in skips[kind].items():
            print(f"  skipped {kind} ({reason}): {count}   e.g. {skips['examples'].get(reason, '')}")
    for reason, count in summary["listing_skips"]["frames"].items():
        print(f"  skipped while listing ({reason}): {count}")


@_user_paths
def cmd_sample_data(args: argparse.Namespace) -> int:
    if args.world:
        from pipeline.sampledata.world import generate_world, world_options_from

        summary = generate_world(args.out, world_options_from(args.seed, args.set), args.workers,
                                 progress=not args.quiet)
        print(f"world written under {args.out}: {summary['frames']} frames ({summary['videos']} videos, "
              f"{summary['train_sequences']} labelled and {summary['test_sequences']} test sequences) in "
              f"{summary['wall_s']} s, {summary['frames_per_s_per_core']} frames/s/core; see world.json")
        return 0
    from pipeline.sampledata import generate

    generate(args.out, seed=args.seed, ho3d_version=args.ho3d_version)
    print(f"sample datasets written under {args.out}: hanco/ ho3d/ doh100/ freihand/, and mano/MANO_RIGHT.pkl "
          f"(a synthetic stand-in in the official format)")
    return 0


@_user_paths
def cmd_detect(args: argparse.Namespace) -> int:
    from pipeline.detect.run import detect, print_report

    report = detect(Path(args.videos), Path(args.out), workers=args.workers, env=Path(args.env),
                    progress=not args.quiet)
    print_report(report)
    return 0


@_user_paths
def cmd_shard(args: argparse.Namespace) -> int:
    from pipeline.sharding.run import merge, shard

    if args.merge:
        summary = merge(Path(args.out))
    else:
        if not args.recipe or not args.root:
            raise HandclrError("handclr shard needs --recipe and --root (or --merge)")
        from pipeline.sharding.recipe import load_recipe

        recipe = load_recipe(args.recipe, {"strict": True} if args.strict else None)
        summary = shard(recipe, Path(args.root), Path(args.out), workers=args.workers, part=args.part,
                        progress=not args.quiet)
    _print_shard_summary(summary)
    return 0


@_user_paths
def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo.run import run_demo

    report = run_demo(args.out, args.minutes, args.seed, args.workers, args.ablations, args.curves)
    print(f"demo report: {report}")
    return 0


@_user_paths
def cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.sharding.verify import verify

    problems = verify(args.dir, deep=args.deep)
    for p in problems:
        print(p)
    if problems:
        print(f"verify: {len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    print(f"verify: {args.dir} OK" + (" (deep)" if args.deep else ""))
    return 0


@_user_paths
def cmd_inspect(args: argparse.Namespace) -> int:
    from pipeline.sharding.summary import format_summary, shard_set_summary

    summary = shard_set_summary(args.dir, args.first)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    if args.samples:
        from pipeline.stream.inspect import write_samples

        for path in write_samples(args.dir, args.samples, args.mode, args.rows, args.seed):
            print(f"wrote {path}")
    return 0


@_user_paths
def cmd_mano_check(args: argparse.Namespace) -> int:
    from pipeline.models.mano import DEFAULT_TIPS, OFFICIAL_MD5, file_md5, load_mano, template_checksum, tip_vertex_ids

    tips = args.tips or DEFAULT_TIPS
    tip_vertex_ids(tips)  # an unknown name fails before the model is read
    model = load_mano(args.path)
    md5 = file_md5(args.path)
    print(f"MANO model {args.path}: md5 {md5} ({OFFICIAL_MD5.get(md5, 'not an official v1.2 MANO file')})")
    for key, value in sorted(model.items()):
        if hasattr(value, "shape"):
            print(f"  {key:<17} {str(value.shape):<14} {value.dtype}")
    print(f"v_template sha256 (float64): {template_checksum(model)}")
    extent = _mano_zero_pose_extent(model, tips)
    print(f"zero pose, flat hand, tips={tips}: 21 joints span x {extent[0]:.4f} y {extent[1]:.4f} z {extent[2]:.4f} m")
    return 0


def _mano_zero_pose_extent(model: dict, tips: str) -> list[float]:
    import torch

    from pipeline.models.mano import build_mano_layer, mano_joints21

    with torch.no_grad():
        joints = mano_joints21(build_mano_layer(model, flat_hand_mean=True)(), tips)[0]
    return (joints.max(dim=0).values - joints.min(dim=0).values).tolist()


@_user_paths
def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate.run import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.dataset, args.out or Path(args.run) / "evaluation", args.weights,
                           args.split, args.max_items, args.device, args.ho3d_submission)
    shown = ("pa_mpjpe", "pa_mpvpe", "ra_mpjpe", "ra_mpvpe", "f5_pa", "f15_pa", "auc_pa_mpjpe_0_50", "epe_2d_px")
    print(" ".join(f"{k}={metrics[k]:.4g}" for k in shown if k in metrics))
    print(f"wrote results.json, report.md and plots to {args.out or Path(args.run) / 'evaluation'}")
    return 0


@_user_paths
def cmd_sweep(args: argparse.Namespace) -> int:
    from pipeline.evaluate.curves import sweep_command

    return sweep_command(args)


@_user_paths
def cmd_embed_report(args: argparse.Namespace) -> int:
    from pipeline.evaluate.embedding import embedding_report

    doc = embedding_report(args.data, args.dataset or ["hanco"], args.encoders, args.out, args.sequences, args.size,
                           args.k, args.window, args.max_dt, args.backbone, args.finetuned or (), args.seed,
                           args.device)
    chance = doc["retrieval_chance"]
    for label, e in doc["encoders"].items():
        print(f"{label}: temporal retrieval {e['retrieval']:.3f} (chance {chance:.3f}) at k={args.k}, ±{args.window}")
    print(f"wrote {', '.join(doc['figures'])}, report.json and report.md to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handclr", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample-data", help="write small copies of the four official dataset layouts, or (--world) "
                                           "the synthetic hand-video world")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ho3d-version", type=int, choices=(2, 3), default=3)
    p.add_argument("--world", action="store_true", help="render the synthetic hand-video world (100DOH raw videos, "
                                                        "HO-3D v3 training and test sequences) instead")
    p.add_argument("--workers", type=int, default=1, help="world: rendering processes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="world: a WorldOptions field (pipeline/sampledata/world.py), e.g. videos=8 or "
                        "motion.period_s=1")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("demo", help="the synthetic world through the whole pipeline: does pre-training help? "
                                    "(launch/demo.py)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--minutes", type=float, default=15.0, help="scales every budget together (15: ~15 min, 2 cores)")
    p.add_argument("--seed", type=int, default=0, help="the world's seed")
    p.add_argument("--workers", type=int, default=2, help="world rendering and sharding processes")
    p.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=None,
                   help="also pre-train PeCLR and SimCLR (default: when minutes >= 30)")
    p.add_argument("--curves", action=argparse.BooleanOptionalAction, default=None,
                   help="also fine-tune at 5, 25 and 100 %% labels for the label-efficiency plot (default: when "
                        "minutes >= 22.5)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("detect", help="per-frame hand boxes and landmarks for raw videos (MediaPipe, run in "
                                      "the separate .venv-detect built by `make detect-env`)")
    p.add_argument("--videos", required=True, help="folder of <video_id>.<mp4|mkv|webm|avi|mov>")
    p.add_argument("--out", required=True, help="box-track CSV to write (e.g. tracks/boxes.csv); the landmarks "
                                                "go to <stem>.landmarks.parquet, the report to detect_report.json")
    p.add_argument("--workers", type=int, default=1, help="detector processes (one video each)")
    p.add_argument("--env", default=".venv-detect", help="the detector's virtual environment")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("shard", help="pack a recipe's datasets into WebDataset shards")
    p.add_argument("--recipe", help="shards/<name>.yaml")
    p.add_argument("--root", help="folder the recipe's source paths are relative to")
    p.add_argument("--out", required=True, help="output folder (shards, manifest.parquet, shards.parquet)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--part", type=_part, help="i/N: shard a deterministic 1/N of the clips (array jobs)")
    p.add_argument("--merge", action="store_true", help="join finished --part outputs under --out")
    p.add_argument("--strict", action="store_true", help="turn any skip into an error")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("verify", help="re-read shards and reconcile them with the manifest")
    p.add_argument("dir")
    p.add_argument("--deep", action="store_true", help="also decode every JPEG and the label archives")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("inspect", help="summary of a shard set: datasets, clips, frames, bytes, first keys")
    p.add_argument("dir")
    p.add_argument("--first", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--samples", metavar="OUT", help="also write PNGs of augmented training tuples and of the "
                                                      "sampled time offsets against the formulas into OUT")
    p.add_argument("--mode", choices=("tempclr", "peclr", "simclr", "sequence"), default="tempclr")
    p.add_argument("--rows", type=int, default=8, help="items in the tuple grid")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("mano-check", help="load a MANO model file (no chumpy needed) and run a zero-pose forward")
    p.add_argument("path", help="MANO_RIGHT.pkl or MANO_LEFT.pkl (v1.2)")
    p.add_argument("--tips", help="fingertip vertex ids: freihand (default), manopth or ho3d")
    p.set_defaults(func=cmd_mano_check)

    p = sub.add_parser("evaluate", help="evaluate a fine-tuning run on labelled shards: metrics, report, plots")
    p.add_argument("--run", required=True, help="the fine-tuning run directory (its config.yaml and weights)")
    p.add_argument("--data", required=True, help="a shard-set directory or shard URLs")
    p.add_argument("--dataset", required=True, help="the samples' dataset name (freihand, ho3d, ...)")
    p.add_argument("--out", help="output folder (default RUN/evaluation)")
    p.add_argument("--weights", default="best", help="best | last | a .safetensors path")
    p.add_argument("--split", choices=("all", "train", "val"), default="all")
    p.add_argument("--max-items", type=int, help="evaluate at most this many frames")
    p.add_argument("--device", help="cuda | cpu (default: cuda when available)")
    p.add_argument("--ho3d-submission", metavar="EVALUATION_TXT",
                   help="also write HO-3D's challenge pred.json / pred.zip, frames in this evaluation.txt's order")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("embed-report", help="compare encoders on the same clips: t-SNE, temporal retrieval, "
                                            "cosine vs time distance, fine-tuned models' equivariance")
    p.add_argument("--data", required=True, help="a shard-set directory or shard URLs")
    p.add_argument("--dataset", action="append", help="dataset to take clips from (repeatable; default hanco)")
    p.add_argument("--encoders", nargs="+", required=True,
                   help="encoder.safetensors paths of pre-training runs, random, imagenet (timm weights, downloaded)")
    p.add_argument("--backbone", help="timm name for random / imagenet (default: the first encoder file's)")
    p.add_argument("--sequences", type=int, default=8, help="clip samples (of >= 2 frames) per dataset")
    p.add_argument("--size", type=int, default=224, help="encoder input size (px)")
    p.add_argument("--k", type=int, default=5, help="nearest neighbours in the retrieval score")
    p.add_argument("--window", type=int, default=4, help="±w positions that count as nearby in time")
    p.add_argument("--max-dt", type=int, help="largest |Δt| of the cosine curve (default: longest clip - 1)")
    p.add_argument("--finetuned", nargs="+", metavar="RUN_DIR",
                   help="fine-tuning runs (best weights): L_equiv, and L_improv of each against the first")
    p.add_argument("--seed", type=int, default=0, help="random encoders' initialisation and t-SNE")
    p.add_argument("--device", help="cuda | cpu (default: cuda when available)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_embed_report)

    p = sub.add_parser("sweep", help="label-efficiency curves: fine-tune and evaluate at several label fractions, "
                                     "initialisations and seeds, then plot (launch/sweep.py)")
    p.add_argument("--config", required=True, help="the fine-tuning recipe every point starts from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--eval-data", required=True, help="the labelled shard set every point is evaluated on")
    p.add_argument("--dataset", required=True, help="its samples' dataset name (freihand, ho3d, ...)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 1.0],
                   help="data.label_fraction values")
    p.add_argument("--inits", nargs="+", required=True, help="random | imagenet | [NAME=]PATH of an encoder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data.seed values")
    p.add_argument("--out", default="runs/sweep", help="one run directory per point, the curves and tables")
    p.add_argument("--weights", default="best", help="best | last: which weights each point is evaluated with")
    p.add_argument("--max-items", type=int, help="evaluate at most this many frames")
    p.add_argument("--device", help="cuda | cpu for the evaluation (default: cuda when available)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--point", metavar="ID|INDEX", help="run only this point (what a SLURM array task runs)")
    only.add_argument("--slurm", action="store_true", help="write OUT/sweep.sbatch: one array task per "
                                                            "unfinished point")
    only.add_argument("--plot-only", action="store_true", help="only draw the curves of the evaluated points")
    p.set_defaults(func=cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except HandclrError as exc:
        print(f"handclr: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
