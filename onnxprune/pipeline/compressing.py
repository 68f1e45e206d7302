"""``onnxprune compress``: policy search over per-group ratios, wired from the stages.

Loads and analyzes the model, builds the search space and the candidate callables
(rewrite to build, ONNX Runtime on the validation split to score), runs the agent, keeps the
best candidate and a resumable checkpoint on disk, and returns a :class:`CompressReport`.
:func:`compress_file` is re-exported by :mod:`onnxprune.pipeline`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx

from onnxprune.analyze import analyze
from onnxprune.analyze import cost as analyze_cost
from onnxprune.analyze.importance import weight_importance
from onnxprune.analyze.types import Analysis
from onnxprune.errors import DataError, OutputError, PlanError
from onnxprune.quantize import QuantPlan
from onnxprune.search.bits import JOINT_METRICS, PRUNE_METRIC
from onnxprune.evaluate import DataSpec, Runtime, evaluate, open_data, timing_threads
from onnxprune.evaluate.cost import disk_bytes
from onnxprune.evaluate.runtime import Device, RunInfo
from onnxprune.execute import Executor, ExecutorSettings, check_settings, open_executor
from onnxprune.io import save_model, write_json_atomic
from onnxprune.large import PROTOBUF_LIMIT
from onnxprune.load import load, read
from onnxprune.pipeline.deploying import DeployOptions, check_deploy, export_repo, finish, run_metadata
from onnxprune.pipeline.candidates import CandidateSpec, candidate_score
from onnxprune.pipeline.compress_outputs import episode_costs, frozen_groups, latency_summary, write_finalists
from onnxprune.pipeline.ddpg_agent import run_ddpg
from onnxprune.pipeline.gnnrl import run_gnnrl
from onnxprune.pipeline.joint import (JointSettings, bit_space, calibration_spec, deployable_hook, joint_report,
                                      joint_round_to, make_quantizer, quantizing_apply)
from onnxprune.pipeline.latency_fit import LatencySettings, measured_space
from onnxprune.pipeline.latency_table import measure_table
from onnxprune.pipeline.pruning import RepairSettings, repair_best, repairing_apply
from onnxprune.plan import ROUND_TO
from onnxprune.report import CompressReport, GroupWidth
from onnxprune.reporting.environment import package_versions
from onnxprune.search.baselines import TOP_EPISODES, OnEpisode, SearchState, random_search, uniform_search
from onnxprune.search.ddpg import DDPGConfig, default_warmup
from onnxprune.search.env import CompressionEnv, Episode
from onnxprune.search.latency import LatencyModel
from onnxprune.search.ppo import PPOConfig
from onnxprune.search.rescale import reachable, rescale
from onnxprune.search.reward import reward_fn
from onnxprune.search.space import SearchSpace
from onnxprune.search.states import AGMC_POOLS, STATE_KINDS

logger = logging.getLogger(__name__)


AGENTS: tuple[str, ...] = ("uniform", "random", *STATE_KINDS, "gnnrl")


def _checkpoint_path(output: Path) -> Path:
    return output.with_name(output.name + ".search.json")


def _read_checkpoint(path: Path, config: dict[str, object]) -> SearchState:
    """The search state saved at ``path``; refuses a checkpoint of another run."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"--resume: cannot read {path} ({exc}); run without --resume") from exc
    if saved.get("config") != config:
        raise PlanError(f"--resume: {path} was written by a run with other settings "
                        f"({saved.get('config')}); repeat those settings or run without --resume")
    return SearchState.from_json(saved["state"])


def _scorer(path: Path, data: DataSpec, runtime: Runtime
            ) -> tuple[float, Callable[[onnx.ModelProto], float], RunInfo]:
    """Validation top-1 (percent) of the input, a candidate scorer returning a fraction, and where it runs."""
    session = runtime.session(path)
    dataset = open_data(data, session.inputs)
    result = evaluate(session, dataset)
    if result.accuracy is None:
        raise DataError("compress --data needs labels to score candidates; add 'labels' to the npz")
    return result.accuracy.top1, candidate_score(runtime, dataset), session.info


def disjoint_calibration(repair: RepairSettings | None, data: DataSpec | None) -> RepairSettings | None:
    """Keep calibration images apart from the validation images when both come from one file.

    Raises:
        DataError: the whole file scores candidates (no ``val_split``), so nothing is left to calibrate on.
    """
    if repair is None or data is None or repair.calib.path is None or data.path is None:
        return repair
    if Path(repair.calib.path).resolve() != Path(data.path).resolve():
        return repair
    if data.val_split is None:
        raise DataError("--calib is the --data file and all of it scores candidates; add --val-split N to set "
                        "the validation images apart, or pass another --calib file")
    calib = dataclasses.replace(repair.calib, disjoint_from=(data.val_split, data.seed))
    return dataclasses.replace(repair, calib=calib)


#: Random action vectors (besides uniform) that must rescale to within 1 % for multiples of 8.
_ROUND_PROBES = 4


def resolve_round_to(analysis: Analysis, importance: Sequence[np.ndarray], requested: int | None, *,
                     target: float, metric: str, max_ratio: float, latency: LatencyModel | None = None) -> int:
    """``requested``, or for ``None`` :data:`~onnxprune.plan.ROUND_TO` where it can meet the target, else 1.

    Multiples of 8 keep groups of 8 channels or fewer whole and move widths in steps of 8, so a
    small model may not reach the target, or not within 1 %, with them: the check rescales uniform
    ratios and a few fixed random ones to the target (AGMC's Algorithm 1, as every candidate is)
    and, when any misses, free widths are used and a warning says so. For the ``latency`` metric
    it uses ``latency`` (the table timed at multiples of 8) when given, else MACs: a table timed
    with many threads can shrink far less than the MACs (an H200 machine's 16-core CPU: at most
    22 % of ResNet-20's latency removable with 8s, where MACs allowed 40 %).
    """
    if requested is not None:
        return requested
    check = "params" if metric == "params" else "latency" if metric == "latency" and latency else "macs"
    space = SearchSpace.build(analysis, importance, max_ratio=max_ratio, round_to=ROUND_TO, latency=latency)
    if reachable(space, target, check):
        rng = np.random.default_rng(0)  # fixed probes: the choice must not depend on the run's seed
        probes = [[target] * len(space), *(rng.uniform(0.0, max_ratio, len(space)) for _ in range(_ROUND_PROBES))]
        hits = [rescale(space, p, target, metric=check, quiet=True) for p in probes]
        if all(abs(r.value - r.goal) <= 0.01 * r.goal for r in hits):
            return ROUND_TO
    logger.warning("--target %s cannot be met within 1 %% with channel counts that are multiples of %d (groups of "
                   "%d or fewer channels stay whole): using free channel counts (--round-to 1)",
                   target, ROUND_TO, ROUND_TO)
    return 1


def search_space(analysis: Analysis, importance: Sequence[np.ndarray], requested: int | None, *, target: float,
                 metric: str, reward: str, max_ratio: float, device: Device, threads: int | None,
                 cache: Path, latency: LatencySettings | None = None,
                 fit_points: Sequence[tuple[float, float]] = ()) -> SearchSpace:
    """The search space: rounding by :func:`resolve_round_to`, and the latency table when needed.

    For a ``latency`` metric or reward, the per-layer table is timed on ``device`` with
    :func:`~onnxprune.evaluate.timing_threads` of ``threads`` (cached in ``cache``). With the
    ``latency`` metric and ``requested`` ``None``, multiples of 8 chosen by MACs are checked again
    against the table; where they miss, free widths are used and the table is timed again on their
    finer width grid. ``latency`` (batch, width menu, whole-model fit to ``fit_points`` or to new
    probes) goes to :func:`~onnxprune.pipeline.latency_fit.measured_space`.
    """
    round_to = resolve_round_to(analysis, importance, requested, target=target, metric=metric, max_ratio=max_ratio)
    model = None
    batch = latency.batch if latency is not None else 1
    timer = Runtime(device=device, threads=timing_threads(threads))
    if "latency" in (metric, reward):  # per-layer table timed on this machine, cached beside the output
        model = LatencyModel(analysis, measure_table(analysis, timer, round_to=round_to, cache=cache, batch=batch))
        if metric == "latency" and requested is None and round_to != 1:
            round_to = resolve_round_to(analysis, importance, None, target=target, metric=metric,
                                        max_ratio=max_ratio, latency=model)
            if round_to == 1:
                model = LatencyModel(analysis, measure_table(analysis, timer, round_to=1, cache=cache, batch=batch))
    space = SearchSpace.build(analysis, importance, max_ratio=max_ratio, round_to=round_to, latency=model)
    if latency is None:
        return space
    menu_cache = cache.with_name(cache.name.removesuffix(".latency.json") + ".widths.json")
    return measured_space(space, timer, latency, metric=metric, table_cache=cache, menu_cache=menu_cache,
                          points=fit_points)


def compress_file(path: str | os.PathLike[str], output: str | os.PathLike[str], *, target: float,
                  metric: str = "macs", agent: str = "uniform", episodes: int = 20, seed: int = 0,
                  round_to: int | None = None, max_ratio: float = 0.8, criterion: str = "l1", reward: str = "err",
                  data: DataSpec | None = None, runtime: Runtime | None = None, resume: bool = False,
                  on_episode: OnEpisode | None = None, warmup: int | None = None,
                  policy: str | os.PathLike[str] | None = None, ppo: PPOConfig | None = None,
                  input_shapes: Mapping[str, Sequence[int]] | None = None,
                  deploy: DeployOptions | None = None, repair: RepairSettings | None = None,
                  proto_limit: int = PROTOBUF_LIMIT, finalists: int = TOP_EPISODES,
                  latency_threads: int | None = None, agmc_pool: str = "mean",
                  joint: JointSettings | None = None, save_finalists: int = 0,
                  executor: ExecutorSettings | None = None, latency: LatencySettings | None = None,
                  fit_points: Sequence[tuple[float, float]] = ()) -> CompressReport:
    """Search per-group ratios meeting ``target`` and save the best pruned model to ``output``.

    The best candidate so far is always at ``output`` and the search state at
    ``<output>.search.json`` (removed on success), so an interrupted run resumes with ``resume``.
    Without ``data`` the run is data-free: one uniform-ratio episode (weight-norm criterion).
    The saved model is simplified and keeps the input's interface and metadata (``deploy``:
    opset, Triton repository written at the end; checked before the search). With ``repair``
    (calibration data), the best candidate is reconstructed (or bias-corrected) before saving, kept
    only if it scores at least as well on ``data``; ``repair.candidate_images`` also repairs every
    candidate on that many calibration images before it is scored. With data and a repair, the
    ``finalists`` best candidates (distinct plans) are all repaired and the best-scoring one is saved. Models above ``proto_limit``
    (protobuf's 2 GiB) go through every step in parts (:mod:`onnxprune.large`). The latency
    table (``latency`` metric or reward) is timed on ``runtime``'s device with ``latency_threads``
    intra-op threads (``None``: :func:`~onnxprune.evaluate.timing_threads`, every CPU but one);
    ``runtime`` keeps its own threads for scoring. ``round_to`` ``None`` chooses multiples of 8
    where they can meet the target (:func:`resolve_round_to`). ``agmc_pool`` picks the ``agmc`` encoder's
    graph pooling (``mean`` or ``diffpool``). ``joint`` (``--quantize``, with a ``bops`` or ``bytes``
    ``metric``) searches bits with the ratios (:mod:`onnxprune.pipeline.joint`): candidates are
    scored simulated, and the simulated best model is written. ``save_finalists`` K > 1 also writes
    the next K - 1 finalists by final score, finished like ``output``, as ``<out>.finalist<k>.onnx``
    (``CompressReport.finalist_files``, for ``--finetune-candidates``; not with ``joint``). ``executor`` (``--backend``) says where
    candidates are scored (:mod:`onnxprune.execute`; default in this process): the results are the
    same on every backend, and a remote worker's candidate is built again here only when it is the new
    best (to save it). ``latency`` times the table, the
    width menu and the whole-model fit at its batch (:mod:`onnxprune.pipeline.latency_fit`;
    ``fit_points`` refit the correction instead of timing probes).
    """
    source, target_path = Path(path).resolve(), Path(output).resolve()
    _check_options(source, target_path, output, agent=agent, policy=policy, agmc_pool=agmc_pool)
    executor = executor or ExecutorSettings()
    check_settings(executor)
    if (joint is not None) != (metric in JOINT_METRICS):
        raise PlanError(f"--metric {metric}: {' and '.join(JOINT_METRICS)} go with --quantize, and --quantize "
                        f"needs --metric {' or '.join(JOINT_METRICS)}")
    if save_finalists > 1 and joint is not None:
        raise PlanError("--finetune-candidates does not combine with --quantize yet; drop one of them")
    if joint is not None and data is None and repair is None:
        raise DataError("--quantize needs images to calibrate activation ranges on; pass --data (or --calib)")
    deploy = deploy or DeployOptions()
    repair = disjoint_calibration(repair, data)
    original = read(source, interface_only=True, proto_limit=proto_limit)  # models above 2 GiB: in parts
    check_deploy(original, deploy, np.random.default_rng(seed), proto_limit=proto_limit)
    started = time.perf_counter()
    analysis = analyze(load(source, input_shapes=input_shapes, proto_limit=proto_limit))
    importance = weight_importance(analysis, criterion)
    if joint is not None:
        round_to = joint_round_to(analysis, importance, round_to, target=target, metric=metric,
                                  max_ratio=max_ratio, settings=joint)
    space = search_space(analysis, importance, round_to, target=target, metric=PRUNE_METRIC.get(metric, metric),
                         reward=reward, max_ratio=max_ratio, device=runtime.device if runtime else "cpu", threads=latency_threads,
                         cache=target_path.with_name(target_path.name + ".latency.json"),
                         latency=latency, fit_points=fit_points)
    round_to = space.round_to
    accuracy_before, score, run_info = None, None, None
    scoring = runtime or Runtime(device="cpu", proto_limit=proto_limit)
    if data is not None:
        accuracy_before, score, run_info = _scorer(source, data, scoring)
    else:
        agent = "uniform"
    bits = bit_space(space, metric, joint, target) if joint is not None else None
    apply = repairing_apply(analysis, source, repair)
    quantize = None
    if joint is not None:
        calib = calibration_spec(repair, data, joint.calib_images)  # type: ignore[arg-type]
        quantize = make_quantizer(source, calib, joint, threads=runtime.threads if runtime else None)
        apply = quantizing_apply(apply, quantize)
    workers = None
    if data is not None and executor.backend != "local":  # workers build the same evaluator from this recipe
        workers = open_executor(executor, CandidateSpec(
            source=source, data=data, device=scoring.device, threads=worker_threads(executor, scoring),
            conv_search=scoring.conv_search, input_shapes=CandidateSpec.shapes(input_shapes), proto_limit=proto_limit,
            repair=repair, joint=joint, calib=calib if joint is not None else None,
            calib_threads=runtime.threads if runtime else None), lambda plan: (None, None))
    env = CompressionEnv(space, target=target, metric=metric, apply=apply, score=score, reward=reward_fn(reward),
                         bits=bits, executor=workers)
    config = _run_config(source, target=target, metric=metric, agent=agent, seed=seed, round_to=round_to,
                         max_ratio=max_ratio, criterion=criterion, reward=reward, data=data, repair=repair,
                         episodes=episodes, warmup=warmup, policy=policy, ppo=ppo, agmc_pool=agmc_pool)
    if latency is not None:
        config["latency"] = {"batch": latency.batch, "width_menu": latency.width_menu,
                             "precision": latency.precision, "menu": [list(m) for m in space.menu or ()]}
    if joint is not None:
        config["joint"] = {**asdict(joint), "w_bits": list(joint.w_bits), "a_bits": list(joint.a_bits),
                           "keep_float": list(joint.keep_float)}
    checkpoint = _checkpoint_path(target_path)
    state = _read_checkpoint(checkpoint, config) if resume and checkpoint.exists() else None
    seen: dict[int, Episode] = {}  # this process's episodes, for their params and latency in the report

    def record(episode: Episode, new_state: SearchState, candidate: onnx.ModelProto, best: bool) -> None:
        seen[episode.index] = episode
        if best:  # a remote worker's candidate is built again here (the same plan gives the same model)
            save_model(candidate if candidate is not None else apply(episode.plan), target_path,
                       proto_limit=proto_limit)
        write_json_atomic(checkpoint, {"config": config, "state": new_state.to_json()})
        if on_episode is not None:
            on_episode(episode, new_state, candidate, best)

    try:
        state = _search(env, agent, config, episodes=episodes, seed=seed, output=target_path, state=state,
                        record=record, resume=resume, policy=policy, ppo=ppo, agmc_pool=agmc_pool)
    finally:
        _close(workers)
    if state.best is None:
        raise PlanError("the search evaluated no episode; raise --episodes")
    pool = (state.top or (state.best,))[:max(finalists, 1)]
    pick, chosen, fixed = repair_best(analysis, source, [(e.plan, e.accuracy) for e in pool], repair, score,
                                      quantize=quantize, keep_models=save_finalists > 1)
    best = pool[pick]
    if quantize is not None:  # the float model and plan go to the deployable-model hook; the simulated one is written
        deployed = deployable_hook(chosen, best.plan, target_path, source, calib, joint,  # type: ignore[arg-type]
                                   threads=runtime.threads if runtime else None)
        float_path = save_model(chosen, target_path.with_name(f"{target_path.stem}.float.onnx"), proto_limit=proto_limit)
        bits_path = target_path.with_name(f"{target_path.stem}.bits.json")
        write_json_atomic(bits_path, QuantPlan(dict(best.plan.bits)).to_json())
        chosen = quantize(best.plan, chosen)
        # written as scored: simplifying would fold BatchNorm into the grid-valued weights (off their grid)
        deploy = dataclasses.replace(deploy, simplify=False)
    accuracy = f"{100.0 * fixed.accuracy:.2f}" if fixed.accuracy is not None else None
    final, opset = finish(original, chosen, deploy, run_metadata(
        "compress", best.plan, target=target, metric=metric, agent=agent, criterion=criterion, accuracy=accuracy),
        np.random.default_rng(seed), proto_limit=proto_limit)
    saved = save_model(final, target_path, proto_limit=proto_limit)
    finalist_files = (saved, *write_finalists(original, pool, pick, fixed, save_finalists, deploy, target_path,
                                              metadata=dict(target=target, metric=metric, agent=agent,
                                                            criterion=criterion), seed=seed,
                                              proto_limit=proto_limit)) if save_finalists > 1 else ()
    triton_dir = export_repo(final, deploy, proto_limit=proto_limit)
    checkpoint.unlink(missing_ok=True)
    after_model = load(saved, input_shapes=input_shapes, proto_limit=proto_limit)
    quant = joint_report(analysis.model, after_model, best.plan, metric) if joint is not None else {}
    if joint is not None:
        path, stored, why = deployed
        quant["quant"] = {**quant["quant"], "deployable": str(path) if path else None, "deployable_reason": why,
                          "deployable_bits": {k: list(v) for k, v in stored.items()},
                          "deployable_bytes": disk_bytes(path) if path else None,
                          "float_model": str(float_path), "bits_plan": str(bits_path)}
    latency_ms = ((space.measure(space.sizes, "latency"), space.measure(best.keeps, "latency"))
                  if space.latency is not None else None)
    widths = tuple(GroupWidth(id=gid, before=size, after=keep)
                   for gid, size, keep in zip(space.group_ids, space.sizes, best.keeps))
    return CompressReport(source=str(source), output=saved, agent=agent, metric=metric, target=target, seed=seed,
                          episodes=state.next_episode, data_free=data is None,
                          before=analyze_cost.model_cost(analysis.model),
                          after=analyze_cost.model_cost(after_model, best.plan.bits),
                          bytes_before=disk_bytes(source), bytes_after=disk_bytes(saved),
                          accuracy_before=accuracy_before, accuracy_after=_percent(fixed.accuracy),
                          accuracy_unrepaired=_percent(best.accuracy) if repair else None,
                          repair_seconds=fixed.seconds,
                          groups=widths, search_seconds=time.perf_counter() - started, best=best,
                          triton_dir=triton_dir, latency_ms=latency_ms,
                          finalists=tuple((e.index, _percent(e.accuracy), _percent(v))
                                          for e, v in zip(pool, fixed.finalists)),
                          agmc_pool=agmc_pool if agent == "agmc" else None,
                          provider=run_info.provider if run_info else None, round_to=round_to, opset=opset,
                          frozen=frozen_groups(analysis), history=episode_costs(state, seen), run=run_info,
                          versions=package_versions(), finalist_files=finalist_files,
                          latency_check=latency_summary(space, best.keeps, latency), **quant)


def worker_threads(settings: ExecutorSettings, scoring: Runtime) -> int:
    """ONNX Runtime threads per worker: ``settings.threads``, else the scoring runtime's CPUs shared out."""
    if settings.threads is not None:
        return settings.threads
    return max(1, scoring.threads // settings.workers) if settings.backend == "process" else 1


def _close(executor: Executor | None) -> None:
    if executor is not None:
        executor.close()


def _check_options(source: Path, target_path: Path, output: str | os.PathLike[str], *, agent: str,
                   policy: str | os.PathLike[str] | None, agmc_pool: str) -> None:
    """Refuse settings that cannot run, each with a one-line fix (before anything is loaded)."""
    if source == target_path:
        raise OutputError(f"-o {output} is the input model; choose another output path (the input is never modified)")
    if agent not in AGENTS:
        raise PlanError(f"--agent {agent} is not available; use one of {', '.join(AGENTS)}")
    if policy is not None and agent not in ("gnnrl", *STATE_KINDS):
        raise PlanError(f"--policy is read by the gnnrl, amc and agmc agents, not {agent}; change --agent "
                        "or drop --policy")
    if agmc_pool not in AGMC_POOLS or (agmc_pool != "mean" and agent != "agmc"):
        raise PlanError(f"--agmc-pool {agmc_pool}: use one of {', '.join(AGMC_POOLS)}, with --agent agmc only")


def _run_config(source: Path, *, target: float, metric: str, agent: str, seed: int, round_to: int,
                max_ratio: float, criterion: str, reward: str, data: DataSpec | None,
                repair: RepairSettings | None, episodes: int, warmup: int | None,
                policy: str | os.PathLike[str] | None, ppo: PPOConfig | None, agmc_pool: str) -> dict[str, object]:
    """The settings that define a run: saved in the checkpoint, a ``--resume`` must repeat them."""
    config: dict[str, object] = {"model": str(source), "target": target, "metric": metric, "agent": agent,
                                 "seed": seed, "round_to": round_to, "max_ratio": max_ratio,
                                 "criterion": criterion, "reward": reward, "data": str(data.path) if data else None,
                                 "val_split": data.val_split if data else None,
                                 "candidate_repair": [repair.mode, repair.candidate_images] if repair else None}
    if agent in STATE_KINDS:  # a --policy agent already acts: no random warm-up unless asked
        config["warmup"] = (0 if policy is not None else default_warmup(episodes)) if warmup is None else warmup
        if policy is not None:
            config["policy"] = str(Path(policy).resolve())
    if agent == "agmc" and agmc_pool != "mean":  # absent for mean: checkpoints from before the option resume
        config["agmc_pool"] = agmc_pool
    if agent == "gnnrl":  # the agent file is part of the run: a resume must name the same one
        config["policy"] = str(Path(policy).resolve()) if policy is not None else None
        config["ppo"] = asdict(ppo or PPOConfig())
    return config


def _search(env: CompressionEnv, agent: str, config: dict[str, object], *, episodes: int, seed: int,
            output: Path, state: SearchState | None, record: OnEpisode, resume: bool,
            policy: str | os.PathLike[str] | None, ppo: PPOConfig | None, agmc_pool: str) -> SearchState:
    """Run ``agent`` on ``env`` from ``state`` (a resumed run) or from the start."""
    agent_file = Path(policy) if policy is not None else None
    if agent == "uniform":
        return state if state is not None and state.best is not None else uniform_search(env, seed=seed,
                                                                                          on_episode=record)
    if agent in STATE_KINDS:  # DDPG on AMC's handcrafted state or AGMC's encoder-decoder state
        return run_ddpg(env, agent, episodes, seed=seed, output=output, state=state, on_episode=record,
                        config=DDPGConfig(warmup=int(str(config["warmup"]))), policy=agent_file, pool=agmc_pool)
    if agent == "gnnrl":  # PPO over the m-GNN policy; the agent is saved as <output>.agent.pt
        return run_gnnrl(env, episodes, seed=seed, output=output, run=config, resume=resume,
                         policy=agent_file, config=ppo, on_episode=record)
    return random_search(env, episodes, seed=seed, state=state, on_episode=record)


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value
