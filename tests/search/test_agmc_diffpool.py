"""AGMC with a DiffPool encoder: state shapes, permutations, auxiliary loss, seeded compress, resume, pooling checks."""

from __future__ import annotations

from collections.abc import Callable

import base64
import copy
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from onnxprune import pipeline
from onnxprune.analyze import analyze
from onnxprune.analyze.cost import model_cost
from onnxprune.analyze.importance import weight_importance
from onnxprune.cli import main
from onnxprune.embed import DiffPoolEncoder, flat_data, make_generator
from onnxprune.errors import PlanError
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.graph import build_graph
from onnxprune.load import load
from onnxprune.pipeline.ddpg_agent import run_ddpg
from onnxprune.pipeline.gnnrl import agent_path
from onnxprune.rewrite import prune_model
from onnxprune.search.agmc_diffpool import AGMCDiffPoolNet
from onnxprune.search.baselines import SearchState
from onnxprune.search.ddpg import DDPGAgent, DDPGConfig, ddpg_search
from onnxprune.search.ddpg_policy import DDPGPolicy
from onnxprune.search.env import CompressionEnv
from onnxprune.search.space import SearchSpace
from onnxprune.search.states import AGMCStates, make_states

SMALL = DDPGConfig(hidden=32, warmup=2, batch_size=8, buffer_size=60, encoder_lr=1e-3)


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("diffpool") / "resnet20.onnx"
    export_onnx(resnet_cifar(20, seed=0), (1, 3, 32, 32), path)
    return path


@pytest.fixture(scope="module")
def space(resnet20: Path) -> SearchSpace:
    analysis = analyze(load(resnet20))
    return SearchSpace.build(analysis, weight_importance(analysis))


@pytest.fixture(scope="module")
def data(tiny_cifar: Callable[[int], Path]) -> DataSpec:
    return DataSpec(path=tiny_cifar(16), preprocess=make_preprocess("cifar"))


def _env(space: SearchSpace) -> CompressionEnv[onnx.ModelProto]:
    """Cheap deterministic score: channels kept by the first three convs (rewards depend on actions)."""
    return CompressionEnv(space, target=0.5, metric="macs", apply=lambda plan: prune_model(space.analysis, plan),
                          score=lambda m: float(np.mean([t.dims[0] for t in m.graph.initializer
                                                         if len(t.dims) == 4][:3]) / 16.0))


def _states(space: SearchSpace, seed: int = 0) -> AGMCStates:
    return AGMCStates(space, generator=torch.Generator().manual_seed(seed), embed_dim=16, state_dim=8, hidden=16,
                      pool="diffpool", clusters=(8, 3))


def _episode(states: AGMCStates, actions: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Acting states and memos of one episode with the given actions."""
    states.begin()
    acted, memos = [], []
    for t in range(len(actions)):
        acted.append(states.state(t, actions[:t]))
        memos.append(states.memo())
    return np.stack(acted), np.stack(memos)


def _net_weights(state: SearchState) -> dict[str, torch.Tensor]:
    tensors = torch.load(io.BytesIO(base64.b64decode(state.agent_state["tensors"])), weights_only=True)
    return tensors["net"]


def test_diffpool_states_have_documented_shapes_and_replay_with_aux_loss(space: SearchSpace) -> None:
    states = _states(space)
    assert isinstance(states.net, AGMCDiffPoolNet) and states.pool == "diffpool"
    assert states.dim == 24 and states.memo_dim == 2 + 16 + len(space)
    actions = [0.1 + 0.05 * t for t in range(len(space))]
    acted, memos = _episode(states, actions)
    assert acted.shape == (len(space), 24) and np.isfinite(acted).all()
    assert np.abs(acted[1:, 8:] - acted[:-1, 8:]).max() > 1e-3  # p_t follows the group
    again, _ = _episode(_states(space), actions)
    np.testing.assert_array_equal(acted, again)  # seeded
    replayed, aux = states.encode_with_loss(torch.from_numpy(memos), states.net)
    torch.testing.assert_close(replayed.detach(), torch.from_numpy(acted), atol=1e-5, rtol=1e-4)
    assert aux is not None and aux.dim() == 0 and float(aux.detach()) > 0
    (replayed.sum() + aux).backward()
    grads = {name: p.grad for name, p in states.net.named_parameters()}
    for name in ("encoder.embed0.0.lin.weight", "encoder.pool0.0.lin.weight", "encoder.out.weight",
                 "decoder.init_h.weight", "decoder.cell.weight_ih"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    mean = AGMCStates(space, generator=torch.Generator().manual_seed(0), embed_dim=16, state_dim=8, hidden=16)
    assert mean.encode_with_loss(torch.from_numpy(_episode(mean, actions)[1]), mean.net)[1] is None


def test_batched_diffpool_equals_single_graphs_and_ignores_node_order(space: SearchSpace) -> None:
    data = flat_data(build_graph(space.analysis.model))
    encoder = DiffPoolEncoder(data.num_features, 16, 8, clusters=(8, 3), generator=make_generator(2))
    x = data.x.unsqueeze(0) * torch.rand(3, 1, data.num_features, generator=make_generator(3))
    perm = torch.randperm(data.num_nodes, generator=make_generator(4))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    with torch.no_grad():
        batch = encoder(x, data.edge_index)
        moved = encoder(x[:, perm], inverse[data.edge_index])
        for b in range(3):
            one = encoder(x[b], data.edge_index)
            torch.testing.assert_close(batch.graph[b:b + 1], one.graph, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(batch.nodes[b], one.nodes, atol=1e-5, rtol=1e-4)
        single = encoder(x[:1], data.edge_index)
        torch.testing.assert_close(single.link_loss, encoder(x[0], data.edge_index).link_loss)
    assert batch.graph.shape == (3, 8) and batch.nodes.shape == (3, data.num_nodes, 8)
    assert (batch.graph[0] - batch.graph[1]).abs().max() > 1e-4
    torch.testing.assert_close(moved.graph, batch.graph, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(moved.nodes, batch.nodes[:, perm], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(moved.entropy_loss, batch.entropy_loss, atol=1e-6, rtol=1e-5)


def test_group_order_permutes_group_embeddings_and_keeps_the_graph_vector(space: SearchSpace) -> None:
    perm = np.random.default_rng(0).permutation(len(space))
    shuffled = replace(space, group_ids=tuple(space.group_ids[i] for i in perm),
                       sizes=tuple(space.sizes[i] for i in perm), scores=tuple(space.scores[i] for i in perm))
    a, b = _states(space), _states(shuffled)
    keep = torch.from_numpy(np.random.default_rng(1).uniform(0.3, 1.0, (1, len(space))).astype(np.float32))
    with torch.no_grad():
        nodes, whole, aux = a.net.encode(a.graph, keep)
        pnodes, pwhole, paux = b.net.encode(b.graph, keep[:, torch.as_tensor(perm)])
    torch.testing.assert_close(pwhole, whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pnodes, nodes, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(paux, aux, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(b.graph.members @ pnodes[0], (a.graph.members @ nodes[0])[torch.as_tensor(perm)],
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.net.scale, a.net.scale)  # per-column maxima over the groups: order-free


class _NoAux:
    """Delegates to an AGMC state builder but drops its auxiliary loss."""

    def __init__(self, states: AGMCStates) -> None:
        self.states = states

    def encode(self, memo: torch.Tensor, net: torch.nn.Module) -> torch.Tensor:
        return self.states.encode(memo, net)

    def encode_with_loss(self, memo: torch.Tensor, net: torch.nn.Module) -> tuple[torch.Tensor, None]:
        return self.states.encode(memo, net), None


def test_aux_loss_trains_only_the_encoder(space: SearchSpace) -> None:
    agents = []
    for _ in range(2):
        states = _states(space)
        agent = DDPGAgent(states.dim, space.max_ratio, SMALL, generator=torch.Generator().manual_seed(1),
                          rng=np.random.default_rng(1), states=states)
        acted, memos = _episode(states, [0.2] * len(space))
        for t in range(len(space)):
            last = t == len(space) - 1
            agent.buffer.add(acted[t], 0.2, -0.5, acted[t] if last else acted[t + 1], last, memos[t],
                             memos[t] if last else memos[t + 1])
        agents.append(agent)
    agents[1].states = _NoAux(agents[1].states)
    for agent in agents:
        agent.update()
    with_aux, without = agents[0].net.state_dict(), agents[1].net.state_dict()
    assert not torch.equal(with_aux["encoder.pool0.0.lin.weight"], without["encoder.pool0.0.lin.weight"])
    for name, value in agents[0].critic.state_dict().items():
        torch.testing.assert_close(value, agents[1].critic.state_dict()[name], atol=1e-7, rtol=0)


def test_search_trains_diffpool_encoder_and_resumes_exactly(space: SearchSpace) -> None:
    def run(episodes: int, state: SearchState | None = None) -> tuple[SearchState, list[tuple[float, ...]]]:
        seen: list[tuple[float, ...]] = []
        final = ddpg_search(_env(space), _states(space), episodes, seed=5, agent="agmc", config=SMALL, state=state,
                            on_episode=lambda e, *_: seen.append(e.requested))
        return final, seen

    full, actions = run(5)
    initial = _states(space).net.state_dict()
    moved = _net_weights(full)
    assert not torch.equal(initial["encoder.pool0.0.lin.weight"], moved["encoder.pool0.0.lin.weight"])
    assert torch.equal(initial["graph_scale"], moved["graph_scale"]) and torch.equal(initial["scale"], moved["scale"])
    partial, _ = run(3)
    resumed, later = run(5, SearchState.from_json(json.loads(json.dumps(partial.to_json()))))
    assert later == actions[3:] and resumed.history == full.history
    assert all(torch.equal(v, _net_weights(resumed)[k]) for k, v in moved.items())


def test_compress_diffpool_is_seeded_meets_target_and_resumes(resnet20: Path, data: DataSpec,
                                                              tmp_path: Path) -> None:
    kwargs = {"target": 0.5, "agent": "agmc", "episodes": 3, "warmup": 1, "seed": 3, "data": data,
              "agmc_pool": "diffpool"}
    runs = [pipeline.compress_file(resnet20, tmp_path / f"r{i}.onnx", **kwargs) for i in range(2)]
    assert runs[0].best.plan == runs[1].best.plan and runs[0].best.requested == runs[1].best.requested
    report = runs[0]
    assert report.agmc_pool == "diffpool" and report.to_json()["agmc_pool"] == "diffpool" and report.episodes == 3
    assert abs(model_cost(load(report.output)).macs / (0.5 * report.before.macs) - 1) <= 0.01
    onnx.checker.check_model(onnx.load(report.output), full_check=True)
    policy = DDPGPolicy.from_bytes(agent_path(report.output).read_bytes(), "test")
    assert (policy.kind, policy.pool, policy.state_dim) == ("agmc", "diffpool", 128)
    assert "encoder.pool0.0.lin.weight" in policy.networks["net"]

    def stop(episode, *_: object) -> None:  # noqa: ANN001 - test callback
        if episode.index == 1:
            raise KeyboardInterrupt

    out = tmp_path / "cut.onnx"
    with pytest.raises(KeyboardInterrupt):
        pipeline.compress_file(resnet20, out, on_episode=stop, **kwargs)
    with pytest.raises(PlanError, match="other settings") as err:
        pipeline.compress_file(resnet20, out, resume=True, **{**kwargs, "agmc_pool": "mean"})
    assert "\n" not in str(err.value)
    seen: list[int] = []
    resumed = pipeline.compress_file(resnet20, out, resume=True, on_episode=lambda e, *_: seen.append(e.index),
                                     **kwargs)
    assert seen == [2] and resumed.best.plan == report.best.plan and resumed.episodes == 3
    with pytest.raises(PlanError, match="--agent agmc only"):
        pipeline.compress_file(resnet20, tmp_path / "amc.onnx", **{**kwargs, "agent": "amc"})


def test_policy_with_other_pooling_is_refused(space: SearchSpace, tmp_path: Path) -> None:
    files = {}
    for pool in ("mean", "diffpool"):
        run_ddpg(_env(space), "agmc", 1, seed=0, output=tmp_path / f"{pool}.onnx", config=SMALL, pool=pool)
        files[pool] = agent_path(tmp_path / f"{pool}.onnx")
    assert DDPGPolicy.from_bytes(files["mean"].read_bytes(), "t").pool == "mean"
    for pool, other in (("mean", "diffpool"), ("diffpool", "mean")):
        with pytest.raises(PlanError, match=f"trained with --agmc-pool {other}, not {pool}; pass --agmc-pool "
                                            f"{other}") as err:
            run_ddpg(_env(space), "agmc", 1, seed=0, output=tmp_path / "o.onnx", config=SMALL, pool=pool,
                     policy=files[other])
        assert "\n" not in str(err.value)
    moved = run_ddpg(_env(space), "agmc", 1, seed=1, output=tmp_path / "t.onnx", config=SMALL, pool="diffpool",
                     policy=files["diffpool"])
    assert moved.next_episode == 1
    policy = DDPGPolicy.from_bytes(files["diffpool"].read_bytes(), "t")
    states = make_states("agmc", _env(space), seed=0)
    agent = DDPGAgent(states.dim, space.max_ratio, SMALL, generator=torch.Generator().manual_seed(0),
                      rng=np.random.default_rng(0), states=states)
    with pytest.raises(PlanError, match="--agmc-pool diffpool, not mean"):
        agent.load_policy(policy, "--policy x.pt")
    old = copy.copy(policy.networks)  # a file written before the option has no pool: it reads as mean
    raw = {"format": "onnxprune-ddpg-agent-1", "kind": "agmc", "state_dim": 128, "config": {}, "networks": old}
    blob = io.BytesIO()
    torch.save(raw, blob)
    assert DDPGPolicy.from_bytes(blob.getvalue(), "t").pool == "mean"
    with pytest.raises(PlanError, match="--agent agmc only"):
        make_states("amc", _env(space), seed=0, pool="diffpool")


def test_cli_agmc_pool_reaches_the_report(resnet20: Path, data: DataSpec, tmp_path: Path) -> None:
    args = ["compress", str(resnet20), "-o", str(tmp_path / "c.onnx"), "--target", "0.5", "--agent", "agmc",
            "--agmc-pool", "diffpool", "--episodes", "1", "--data", str(data.path), "--preprocess", "cifar",
            "--json", str(tmp_path / "c.json")]
    assert main(args) == 0
    saved = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    assert saved["agent"] == "agmc" and saved["agmc_pool"] == "diffpool"
    assert DDPGPolicy.from_bytes(agent_path(tmp_path / "c.onnx").read_bytes(), "t").pool == "diffpool"
    assert main([*args[:6], "--agent", "amc", *args[8:]]) == 2  # diffpool with another agent: refused
