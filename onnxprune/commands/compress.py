"""``onnxprune compress``: search per-group pruning ratios that meet a MACs/params target."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onnxprune import pipeline
from onnxprune.commands._deploy_options import add_deploy_options, deploy_options, print_opset_notice
from onnxprune.commands.compress_tables import bits_table, candidates_table, print_latency, search_table, widths_table
from onnxprune.commands._repair_options import add_repair_options, repair_mode
from onnxprune.commands._model_options import add_input_shape_option, parse_input_shapes
from onnxprune.commands.eval import data_spec
from onnxprune.commands.finetune import add_training_options, run_training, settings_from
from onnxprune.commands.finetune import summary as finetune_summary
from onnxprune.commands.finetune import table as finetune_table
from onnxprune.pipeline.finetuning import FinetuneSettings
from onnxprune.report import FinalistTuning, FinetuneReport
from onnxprune.pipeline.compressing import CompressReport
from onnxprune.pipeline.latency_first import Int8Settings
from onnxprune.pipeline.latency_fit import LatencySettings
from onnxprune.pipeline.pruning import RepairSettings
from onnxprune.errors import DataError, OutputError, PlanError
from onnxprune.evaluate import PRESETS, Runtime
from onnxprune.execute import BACKENDS, DEFAULT_TIMEOUT_S, ExecutorSettings
from onnxprune.io import write_json_atomic
from onnxprune.plan import ROUND_TO
from onnxprune.search.baselines import TOP_EPISODES, SearchState
from onnxprune.search.env import Episode
from onnxprune.search.reward import REWARDS
from onnxprune.search.space import METRICS
from onnxprune.pipeline.joint import JointSettings
from onnxprune.quantize.plan import A_BITS, W_BITS
from onnxprune.search.bits import JOINT_METRICS, parse_bits

CANDIDATE_IMAGES = 128
"""Calibration images each candidate is reconstructed on with ``--reconstruct`` (ResNet-56: about 2 s;
unrepaired candidates of a 50 % MACs cut score near chance, so their ranking carries no signal)."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PlanError(f"--target '{text}' is not a number; pass the fraction to remove, e.g. 0.5") from None
    if not 0.0 < value < 1.0:
        raise PlanError(f"--target {value} is outside (0, 1); pass the fraction to remove, e.g. 0.5")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compress`` subcommand."""
    parser = subparsers.add_parser(
        "compress", help="search per-layer pruning ratios for a MACs/params target",
        description="Find per-group pruning ratios that remove --target of the MACs (or params) with the best "
                    "validation accuracy, and write the pruned model. Without --data: one data-free "
                    "uniform-ratio candidate (weight-norm criterion).")
    parser.add_argument("model", type=Path, help="the .onnx file (never modified)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the pruned model")
    parser.add_argument("--target", type=str, required=True, help="fraction of --metric to remove (0.5: half)")
    parser.add_argument("--metric", choices=(*METRICS, *JOINT_METRICS), default="macs",
                        help="resource the target applies to (latency: whole-model time measured here: a per-layer "
                             "Conv/Gemm table fitted to end-to-end timings, the written model timed end to end and "
                             "searched again with a refitted fit if it misses; "
                             "bops / bytes with --quantize: MACs x weight bits x activation bits, or model bytes)")
    parser.add_argument("--quantize", action="store_true",
                        help="joint search: every agent also picks weight / activation bits per group; candidates are "
                             "scored simulated and the simulated best model is written (needs --metric bops|bytes)")
    parser.add_argument("--w-bits", default=",".join(map(str, W_BITS)), metavar="LIST",
                        help=f"--quantize: allowed weight bits (default {','.join(map(str, W_BITS))})")
    parser.add_argument("--a-bits", default=",".join(map(str, A_BITS)), metavar="LIST",
                        help=f"--quantize: allowed activation bits (default {','.join(map(str, A_BITS))})")
    parser.add_argument("--keep-float", default="", metavar="LIST",
                        help="--quantize: layers kept float: first, last or node names (default none)")
    parser.add_argument("--latency-batch", type=int, default=1, metavar="B",
                        help="batch size the latency table, --width-menu and the measured latency check are timed "
                             "at (default 1)")
    parser.add_argument("--width-menu", action="store_true",
                        help="keep only widths measured fast on this device: each class of equal groups is timed "
                             "end to end at every multiple of --round-to and widths no faster than a larger one "
                             "are dropped (cached in <out>.widths.json)")
    parser.add_argument("--quantize-int8", action="store_true",
                        help="also write <out>.int8.onnx: int8 QDQ of the pruned model (ONNX Runtime), with the "
                             "--max-drop fallback on --data; the width menu is then timed in int8, where fewer "
                             "widths pay, so less latency can be cut (a --target out of reach says how much can)")
    parser.add_argument("--max-drop", type=float, default=None, metavar="F",
                        help="--quantize-int8: send layers back to float until top-1 is within F of the pruned "
                             "float model's on the --data images (default 0.01; 0 turns the fallback off)")
    parser.add_argument("--agent", choices=pipeline.AGENTS, default="agmc",
                        help="search agent (default agmc: DDPG on a GCN encoder-decoder state; beat random search "
                             "on all 6 CIFAR ResNet benchmark runs, gnnrl on 5 of 6, see README)")
    parser.add_argument("--policy", type=Path, default=None, metavar="AGENT_PT",
                        help="gnnrl/amc/agmc: start from an agent trained on another model (its <out>.agent.pt; "
                             "amc/agmc then skip the random warm-up unless --warmup is given)")
    parser.add_argument("--agmc-pool", choices=("mean", "diffpool"), default="mean",
                        help="agmc: graph pooling of the encoder (mean: GCN + Mean Pool, default; diffpool: "
                             "GCN + DiffPool re-run on the pruned graph at every step, AGMC's choice for large graphs)")
    parser.add_argument("--episodes", type=int, default=30, metavar="N", help="candidates to evaluate")
    parser.add_argument("--warmup", type=int, default=None, metavar="N",
                        help="amc/agmc: random-action episodes before DDPG learns (default min(100, episodes // 3))")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search and of --val-split")
    parser.add_argument("--round-to", type=int, default=None, metavar="N",
                        help=f"keep channel counts multiples of N (default {ROUND_TO}, widths ONNX Runtime runs fast on "
                             "CPU and GPU, or 1 where that cannot reach --target; 1: the finest widths, often slower; "
                             "groups of N or fewer channels stay whole, and the whole group is a width too)")
    parser.add_argument("--max-ratio", type=float, default=0.8, help="most of a group's channels removed (0.8)")
    parser.add_argument("--criterion", choices=("l1", "l2", "fpgm"), default="l1", help="which channels go")
    parser.add_argument("--reward", choices=sorted(REWARDS), default="err", help="AGMC reward (default err)")
    parser.add_argument("--data", type=Path, metavar="PATH", help="labelled validation .npz or image folder")
    parser.add_argument("--preprocess", choices=sorted(PRESETS), default=None, help="preset for --data")
    parser.add_argument("--scale", type=float, help="divide raw values by this (overrides the preset)")
    parser.add_argument("--layout", choices=("nchw", "nhwc"), help="the model input's layout")
    parser.add_argument("--val-split", type=int, metavar="N", help="score candidates on a seeded subset of N")
    parser.add_argument("--resume", action="store_true", help="continue from <output>.search.json")
    add_repair_options(parser, layers="the best candidate's")
    parser.add_argument("--reconstruct-candidates", type=int, default=None, metavar="N",
                        help=f"repair every candidate on N calibration images before scoring it, so the search ranks "
                             f"candidates as they will be shipped (default {CANDIDATE_IMAGES} with --reconstruct, "
                             "0 otherwise; 0 scores candidates unrepaired)")
    parser.add_argument("--finalists", type=int, default=TOP_EPISODES, metavar="N",
                        help=f"with --data and a repair: repair the N best candidates on all of --calib and keep "
                             f"the best-scoring one (1..{TOP_EPISODES}, default {TOP_EPISODES})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="execution provider that scores candidates and times the latency table, and where "
                             "--finetune-epochs trains: CUDA when onnxruntime-gpu (torch: a CUDA build) and a GPU "
                             "are present (auto)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="ONNX Runtime intra-op threads (default: every CPU to score candidates; every CPU but "
                             "one, at least 1, to time the --metric/--reward latency table, for repeatable timings)")
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help="where candidates are pruned, repaired and scored: in this process (local), on "
                             "--workers processes of this machine (process) or on Ray actors (ray; needs "
                             "pip install 'onnxprune[ray]'); the results are the same on every backend")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes or Ray actors of --backend process/ray (default 2)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="Ray cluster to join with --backend ray (auto: the running one; default: start a "
                             "local Ray)")
    parser.add_argument("--candidate-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds a candidate may take on a worker before the worker is replaced and the "
                             f"candidate re-run elsewhere (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the report as JSON")
    parser.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                        help="fine-tune the written model N epochs by distillation from the input (see `onnxprune "
                             "finetune`); the searched model is kept as <out>.searched.onnx; with --quantize: "
                             "quantization-aware training of <out>.float.onnx at the searched bits; with "
                             "--quantize-int8: <out>.int8.onnx is made from the tuned weights")
    parser.add_argument("--finetune-data", type=Path, default=None, metavar="FILE",
                        help="training images for --finetune-epochs (default: --data)")
    add_training_options(parser, prefix="finetune-")
    parser.add_argument("--finetune-candidates", type=int, default=1, metavar="K",
                        help="with --finetune-epochs: give the K best finalists (<= --finalists) a short tune "
                             "each and fine-tune the one with the best validation top-1 after it (default 1: "
                             "only the searched best); the others stay as <out>.finalist<k>.onnx")
    parser.add_argument("--finetune-candidate-epochs", type=int, default=1, metavar="E",
                        help="epochs of each finalist's short tune (default 1)")
    parser.add_argument("--report", type=Path, default=None, metavar="HTML",
                        help="write a self-contained HTML report (summary, per-group widths, search curve, "
                             "candidates, reproduce); `onnxprune report` makes one from a --json file later")
    add_input_shape_option(parser)
    add_deploy_options(parser, triton=True)
    parser.set_defaults(run=run)


def _data(args: argparse.Namespace) -> Any:
    if args.data is None:
        return None
    ns = argparse.Namespace(preprocess=args.preprocess, scale=args.scale, mean=None, std=None, layout=args.layout,
                            dtype=None,
                            data=args.data, data_module=None, val_split=args.val_split, seed=args.seed)
    return data_spec(ns)


def _repair(args: argparse.Namespace) -> RepairSettings | None:
    mode = repair_mode(args)
    if mode is None:
        if args.calib is not None or args.reconstruct_candidates:
            raise DataError("--calib / --reconstruct-candidates repair candidates; add --reconstruct or --bias-correct")
        return None
    if args.calib is None:
        raise DataError(f"--{'reconstruct' if args.reconstruct else 'bias-correct'} needs calibration data; "
                        "pass --calib FILE.npz")
    candidates = args.reconstruct_candidates
    if candidates is None:
        candidates = CANDIDATE_IMAGES if mode == "reconstruct" else 0
    if args.calib_size < 1 or candidates < 0:
        raise DataError("--calib-size must be >= 1 and --reconstruct-candidates >= 0")
    ns = argparse.Namespace(preprocess=args.preprocess, scale=args.scale, mean=None, std=None, layout=args.layout,
                            dtype=None, data=args.calib, data_module=None, val_split=args.calib_size, seed=args.seed)
    return RepairSettings(calib=data_spec(ns), mode=mode, candidate_images=candidates)


def _joint(args: argparse.Namespace) -> JointSettings | None:
    if not args.quantize:
        if args.metric in JOINT_METRICS:
            raise PlanError(f"--metric {args.metric} needs --quantize (the joint pruning + bits search)")
        return None
    return JointSettings(w_bits=parse_bits(args.w_bits, W_BITS, "--w-bits"),
                         a_bits=parse_bits(args.a_bits, A_BITS, "--a-bits"),
                         keep_float=tuple(k.strip() for k in args.keep_float.split(",") if k.strip()))


def _latency(args: argparse.Namespace) -> LatencySettings | None:
    """Latency settings when any latency-first option is used (``None``: the plain search)."""
    if args.max_drop is not None and not args.quantize_int8:
        raise PlanError("--max-drop goes with --quantize-int8 (for `onnxprune quantize` use its own --max-drop)")
    if not (args.metric == "latency" or args.width_menu or args.quantize_int8 or args.latency_batch != 1):
        return None
    if args.quantize_int8 and args.quantize:
        raise PlanError("--quantize-int8 writes int8 after pruning; --quantize is the joint bits search: use one")
    return LatencySettings(batch=args.latency_batch, width_menu=args.width_menu,
                           precision="int8" if args.quantize_int8 else "float32")


def _int8(args: argparse.Namespace, data: Any, repair: RepairSettings | None) -> Int8Settings | None:
    if not args.quantize_int8:
        return None
    drop = 0.01 if args.max_drop is None else args.max_drop
    if not 0.0 <= drop < 1.0:
        raise DataError(f"--max-drop {drop}: give a fraction in [0, 1), e.g. 0.01")
    if data is None and repair is None:
        raise DataError("--quantize-int8 needs images to calibrate activation ranges on; pass --data (or --calib)")
    calib = repair.calib if repair is not None else dataclasses.replace(
        data, val_split=512, seed=args.seed + 1, disjoint_from=(data.val_split, args.seed) if data.val_split else None)
    return Int8Settings(calib=calib, val=data, max_drop=drop if drop > 0 and data is not None else None,
                        threads=args.threads)


def _check_finetune(args: argparse.Namespace) -> None:
    if args.finetune_epochs < 0:
        raise PlanError(f"--finetune-epochs {args.finetune_epochs}: give 0 (no fine-tuning) or more")
    if not args.finetune_epochs:
        if args.finetune_candidates != 1:
            raise PlanError("--finetune-candidates needs --finetune-epochs N (the full tune of the chosen finalist)")
        return
    if getattr(args, "triton_repo", None) is not None:
        raise PlanError("--finetune-epochs does not combine with --triton-repo; fine-tune first, then run "
                        "`onnxprune export-triton` on the tuned model")
    if (args.finetune_data or args.data) is None:
        raise DataError("--finetune-epochs needs training images: pass --finetune-data or --data")
    if not 1 <= args.finetune_candidates <= args.finalists:
        raise PlanError(f"--finetune-candidates {args.finetune_candidates}: choose between 1 and --finalists "
                        f"({args.finalists})")
    if args.finetune_candidates > 1 and args.quantize:
        raise PlanError("--finetune-candidates does not combine with --quantize yet; drop one of them")
    if args.finetune_candidate_epochs < 1:
        raise PlanError(f"--finetune-candidate-epochs {args.finetune_candidate_epochs}: give 1 or more")


def _finetune(args: argparse.Namespace, report: CompressReport, console: Console
              ) -> tuple[FinetuneReport, FinalistTuning | None]:
    settings = settings_from(args, args.finetune_data or args.data, args.finetune_epochs, prefix="finetune_")
    runner: Callable[..., FinetuneReport] = functools.partial(pipeline.finetune_compressed,
                                                              quantized=report.quant is not None)
    picked: list[FinalistTuning] = []
    if len(report.finalist_files) > 1:
        console.print(f"short tune ({args.finetune_candidate_epochs} epoch(s)) of {len(report.finalist_files)} "
                      "finalists, then the best one in full")

        def tune_finalists(output: Path, teacher: Path, settings: FinetuneSettings, **callbacks: Any
                           ) -> FinetuneReport:
            final, tuning = pipeline.finetune_finalists(output, teacher, report.finalist_files, settings,
                                                        short_epochs=args.finetune_candidate_epochs, **callbacks)
            picked.append(tuning)
            return final
        runner = tune_finalists
    tuned = run_training(report.output, Path(args.model), report.output, settings, runner=runner)
    tuning = picked[0] if picked else None
    if tuning is not None:
        console.print(candidates_table(tuning))
    if tuned.qat:
        console.print(f"quantization-aware training of {Path(tuned.source).name} at the searched bits; the searched "
                      f"simulated model is kept as {pipeline.searched_path(report.output).name}")
        console.print(f"deployable QDQ model of the tuned weights: {tuned.deployable}" if tuned.deployable
                      else f"no deployable QDQ model: {tuned.deployable_reason}")
    console.print(finetune_table(tuned))
    console.print(finetune_summary(tuned))
    return tuned, tuning


def run(args: argparse.Namespace) -> int:
    """Run the search and print the report."""
    target = _fraction(args.target)
    joint = _joint(args)
    if not 1 <= args.finalists <= TOP_EPISODES:
        raise PlanError(f"--finalists {args.finalists}: choose between 1 and {TOP_EPISODES}")
    repair = _repair(args)
    if args.report is not None and not args.report.resolve().parent.is_dir():
        raise OutputError(f"--report {args.report}: folder {args.report.parent} does not exist; create it first")
    deploy = deploy_options(args, args.output)
    _check_finetune(args)
    data = _data(args)
    latency = _latency(args)
    int8 = _int8(args, data, repair)
    console = Console()
    if data is None:
        console.print("No --data: data-free run, one uniform-ratio candidate (weight-norm criterion); "
                      "pass --data val.npz to search ratios by accuracy.")
    episodes = 1 if data is None or args.agent == "uniform" else args.episodes
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=Console(stderr=True), transient=True,
                  disable=not Console(stderr=True).is_terminal) as progress:
        task = progress.add_task("search", total=episodes, info="")

        def on_episode(episode: Episode, state: SearchState, _candidate: Any, _best: bool) -> None:
            best = state.best
            acc = f"{100 * best.accuracy:.2f} %" if best and best.accuracy is not None else "-"
            progress.update(task, completed=state.next_episode,
                            info=f"ep {episode.index} best reward {best.reward if best else 0:.4f} "
                                 f"acc {acc} MACs {best.macs if best else 0:,}")

        extra: dict[str, Any] = {}
        if latency is not None:  # with --finetune-epochs, int8 comes after the tune (of the tuned weights)
            extra = {"latency": latency, "int8": None if args.finetune_epochs else int8}
        compress = pipeline.compress_latency_first if latency is not None else pipeline.compress_file
        report = compress(
            args.model, args.output, target=target, metric=args.metric, agent=args.agent, episodes=args.episodes,
            seed=args.seed, round_to=args.round_to, max_ratio=args.max_ratio, criterion=args.criterion,
            reward=args.reward, data=data, runtime=Runtime(device=args.device, threads=args.threads, conv_search="HEURISTIC"),
            resume=args.resume, on_episode=on_episode, warmup=args.warmup, policy=args.policy, repair=repair,
            finalists=args.finalists, latency_threads=args.threads,
            input_shapes=parse_input_shapes(args.input_shape), deploy=deploy, agmc_pool=args.agmc_pool,
            joint=joint, save_finalists=args.finetune_candidates if args.finetune_epochs else 0,
            executor=ExecutorSettings(backend=args.backend, workers=args.workers, address=args.ray_address,
                                      candidate_timeout=args.candidate_timeout, threads=args.threads), **extra)
    console.print(search_table(report))
    console.print(widths_table(report))
    if report.quant is not None:
        console.print(bits_table(report))
    print_opset_notice(report.opset)
    widths = "free channel counts" if report.round_to == 1 else f"channel counts multiples of {report.round_to}"
    console.print(f"removed {report.achieved:.1%} of {report.metric} (target {report.target:.0%}), {widths}; "
                  f"wrote {report.output}")
    if report.quant is not None:
        q = report.quant
        if q.get("deployable"):
            size = f"{q['deployable_bytes'] / max(report.bytes_before, 1):.3f}x the input's bytes"
            console.print(f"wrote deployable QDQ model {q['deployable']} ({size}; int8/int4 as ONNX Runtime stores them)")
        else:
            console.print(f"no deployable QDQ model: {q.get('deployable_reason')}")
        console.print(f"pruned float model {q['float_model']} and bits plan {q['bits_plan']} "
                      "(for `onnxprune finetune --quant-plan`)")
    print_latency(report, console)
    if report.triton_dir is not None:
        console.print(f"wrote Triton model {report.triton_dir} (config.pbtxt, 1/model.onnx)")
    report = dataclasses.replace(report, command=("onnxprune", *getattr(args, "argv", ())))
    tuned, tuning = _finetune(args, report, console) if args.finetune_epochs else (None, None)
    if tuned is not None and int8 is not None and latency is not None:
        report = pipeline.quantize_tuned(report, int8, latency, device=args.device, threads=args.threads)
        print_latency(dataclasses.replace(report, latency_check=None), console)
    if args.json is not None:
        write_json_atomic(args.json, {**report.to_json(), "finetune": tuned.to_json() if tuned else None,
                                      "finetune_candidates": tuning.to_json() if tuning else None})
    if args.report is not None:
        console.print(f"wrote report {pipeline.write_report([report.to_json()], args.report, labels=[report.output.name])}")
    return 0
