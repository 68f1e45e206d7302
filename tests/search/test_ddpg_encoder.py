"""AGMC's trained encoder-decoder (batched re-embedding, end-to-end updates, resume) and DDPG policies."""

from __future__ import annotations

from collections.abc import Callable

import base64
import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.export import export_onnx
from models.zoo import zoo_entries
from onnxprune import pipeline
from onnxprune.analyze import analyze
from onnxprune.analyze.cost import model_cost
from onnxprune.analyze.importance import weight_importance
from onnxprune.embed import flat_data, group_pool_index, pool_groups
from onnxprune.errors import PlanError
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.graph import build_graph
from onnxprune.load import load
from onnxprune.pipeline.ddpg_agent import run_ddpg
from onnxprune.pipeline.gnnrl import agent_path
from onnxprune.rewrite import prune_model
from onnxprune.search.agmc_net import DYNAMIC_FEATURES, AGMCNet, GraphTensors
from onnxprune.search.baselines import SearchState
from onnxprune.search.ddpg import DDPGAgent, DDPGConfig, ddpg_search, export_policy
from onnxprune.search.ddpg_policy import DDPGPolicy
from onnxprune.search.env import CompressionEnv
from onnxprune.search.space import SearchSpace
from onnxprune.search.states import AGMCStates, AMCStates

SMALL = DDPGConfig(hidden=32, warmup=2, batch_size=8, buffer_size=60, encoder_lr=1e-3)


def _export(name: str, path: Path) -> Path:
    entry = next(e for e in zoo_entries() if e.name == name)
    export_onnx(entry.build(0), entry.input_shape, path, exporter="torchscript")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("agmc")
    return {name: _export(name, folder / f"{name}.onnx") for name in ("resnet20", "vgg_bn")}


@pytest.fixture(scope="module")
def space(models: dict[str, Path]) -> SearchSpace:
    analysis = analyze(load(models["resnet20"]))
    return SearchSpace.build(analysis, weight_importance(analysis))


def _env(space: SearchSpace) -> CompressionEnv[onnx.ModelProto]:
    """Cheap deterministic score: channels kept by the first three convs (rewards depend on actions)."""
    return CompressionEnv(space, target=0.5, metric="macs", apply=lambda plan: prune_model(space.analysis, plan),
                          score=lambda m: float(np.mean([t.dims[0] for t in m.graph.initializer
                                                         if len(t.dims) == 4][:3]) / 16.0))


def _states(space: SearchSpace, seed: int = 0) -> AGMCStates:
    return AGMCStates(space, generator=torch.Generator().manual_seed(seed), embed_dim=16, state_dim=8, hidden=16)


def _net_weights(state: SearchState) -> dict[str, torch.Tensor]:
    """The encoder-decoder weights saved in a search state's agent."""
    tensors = torch.load(io.BytesIO(base64.b64decode(state.agent_state["tensors"])), weights_only=True)
    return tensors["net"]


def test_batched_encoder_matches_graph_features_and_gcn(space: SearchSpace) -> None:
    cg = build_graph(space.analysis.model).with_groups([space.analysis.groups[g] for g in space.group_ids])
    data = flat_data(cg)
    graph = GraphTensors.build(cg, tuple(space.group_ids), data.edge_index, hops=2)
    net = AGMCNet(data.num_features, 16, 12, 8, 3, generator=torch.Generator().manual_seed(1))
    keeps = np.random.default_rng(0).uniform(0.2, 1.0, (3, len(space))).astype(np.float32)
    features = graph.features(torch.from_numpy(keeps))
    for b in range(3):
        cg.set_keep(dict(zip(space.group_ids, keeps[b].tolist())))
        x = cg.node_features()
        np.testing.assert_allclose(features[b].numpy(), x[:, -DYNAMIC_FEATURES:], atol=1e-6)
        reference = net.encoder(torch.from_numpy(x), data.edge_index)
        pooled = pool_groups(reference.nodes, group_pool_index(cg), len(space))
        torch.testing.assert_close(net.groups(graph, torch.from_numpy(keeps[b])), pooled, atol=1e-5, rtol=1e-4)
        whole = net.embed(graph, torch.from_numpy(keeps[b:b + 1]), torch.zeros(1, dtype=torch.long),
                          torch.tensor([len(space)]))
        torch.testing.assert_close(whole, reference.graph, atol=1e-5, rtol=1e-4)
    assert max(len(f.nodes) for f in graph.fields[:-1]) < len(graph.fields[-1].nodes)  # groups read a subgraph


def test_replayed_states_equal_acting_states_and_carry_gradients(space: SearchSpace) -> None:
    states = _states(space)
    states.begin()
    acted, memos, actions = [], [], []
    for t in range(len(space)):
        acted.append(states.state(t, actions))
        memos.append(states.memo())
        actions.append(0.1 + 0.05 * t)
    assert memos[0].shape == (states.memo_dim,) and states.memo_dim == 2 + 16 + len(space)
    replayed = states.encode(torch.from_numpy(np.stack(memos)), states.net)
    torch.testing.assert_close(replayed.detach(), torch.from_numpy(np.stack(acted)), atol=1e-5, rtol=1e-4)
    replayed.sum().backward()
    grads = {name: p.grad for name, p in states.net.named_parameters()}
    assert grads["encoder.convs.0.lin.weight"].abs().sum() > 0 and grads["decoder.init_h.weight"].abs().sum() > 0


def test_critic_loss_trains_encoder_and_flag_freezes_it(space: SearchSpace) -> None:
    trained = ddpg_search(_env(space), _states(space), 4, seed=3, agent="agmc", config=SMALL)
    frozen = ddpg_search(_env(space), _states(space), 4, seed=3, agent="agmc",
                         config=DDPGConfig(**{**SMALL.__dict__, "train_encoder": False}))
    initial = _states(space).net.state_dict()
    moved = _net_weights(trained)
    changed = [k for k in initial if not torch.equal(initial[k], moved[k])]
    assert "encoder.convs.0.lin.weight" in changed and "decoder.cell.weight_ih" in changed
    assert all(torch.equal(initial[k], v) for k, v in _net_weights(frozen).items())
    assert "scale" not in changed  # the state normalization stays fixed


def test_seeded_agmc_reproducible_and_resume_restores_encoder(space: SearchSpace) -> None:
    def run(episodes: int, state: SearchState | None = None,
            seed: int = 5) -> tuple[SearchState, list[tuple[float, ...]]]:
        seen: list[tuple[float, ...]] = []
        final = ddpg_search(_env(space), _states(space), episodes, seed=seed, agent="agmc", config=SMALL,
                            state=state, on_episode=lambda e, *_: seen.append(e.requested))
        return final, seen

    full, actions = run(5)
    again, actions_again = run(5)
    assert actions == actions_again and full.history == again.history
    assert all(torch.equal(v, _net_weights(again)[k]) for k, v in _net_weights(full).items())
    partial, _ = run(3)
    reloaded = SearchState.from_json(json.loads(json.dumps(partial.to_json())))
    resumed, later = run(5, reloaded)
    assert later == actions[3:]  # the restored encoder, optimizers and replay act as the uninterrupted run
    assert all(torch.equal(v, _net_weights(resumed)[k]) for k, v in _net_weights(full).items())
    assert run(3, seed=6)[1] != actions[:3]


def test_policy_round_trip_acts_greedily_on_another_model(space: SearchSpace, models: dict[str, Path]) -> None:
    states = _states(space)
    trained = ddpg_search(_env(space), states, 4, seed=1, agent="agmc", config=SMALL)
    policy = DDPGPolicy.from_bytes(export_policy(trained, "agmc", states, space.max_ratio, SMALL).to_bytes(),
                                   "test")
    assert (policy.kind, policy.state_dim) == ("agmc", 24) and {"actor", "net", "net_target"} <= set(policy.networks)
    analysis = analyze(load(models["vgg_bn"]))
    vgg = SearchSpace.build(analysis, weight_importance(analysis))
    no_noise = DDPGConfig(**{**SMALL.__dict__, "warmup": 0, "init_delta": 0.0})
    seen: list[tuple[float, ...]] = []
    ddpg_search(_env(vgg), _states(vgg, seed=9), 1, seed=9, agent="agmc", config=no_noise, policy=policy,
                on_episode=lambda e, *_: seen.append(e.requested))
    replay = _states(vgg, seed=4)  # other seed: every weight must come from the policy
    agent = DDPGAgent(replay.dim, vgg.max_ratio, no_noise, generator=torch.Generator().manual_seed(4),
                      rng=np.random.default_rng(4), states=replay)
    agent.load_policy(policy, "test")
    replay.begin()
    greedy: list[float] = []
    for t in range(len(vgg)):
        greedy.append(agent.greedy(replay.state(t, greedy)))
    np.testing.assert_allclose(seen[0], greedy, rtol=1e-6)  # no random warm-up: the policy acted at once
    with pytest.raises(PlanError, match="trained by --agent agmc, not amc"):
        policy.check("amc", 11, "--policy x.pt")
    with pytest.raises(PlanError, match="size 24"):
        policy.check("agmc", 128, "--policy x.pt")


@pytest.fixture(scope="module")
def tiny_npz(tiny_cifar: Callable[[int], Path]) -> Path:
    return tiny_cifar(16)


def test_compress_saves_agent_and_policy_transfers_to_zoo_model(models: dict[str, Path], tiny_npz: Path,
                                                                 tmp_path: Path) -> None:
    data = DataSpec(path=tiny_npz, preprocess=make_preprocess("cifar"))
    first = pipeline.compress_file(models["resnet20"], tmp_path / "r20.onnx", target=0.5, agent="agmc",
                                   episodes=2, warmup=1, seed=3, data=data)
    saved = agent_path(first.output)
    policy = DDPGPolicy.from_bytes(saved.read_bytes(), "test")
    assert policy.kind == "agmc" and policy.state_dim == 128 and policy.config["warmup"] == 1
    report = pipeline.compress_file(models["vgg_bn"], tmp_path / "vgg.onnx", target=0.5, agent="agmc", episodes=2,
                                    seed=3, data=data, policy=saved)
    assert report.episodes == 2 and agent_path(report.output).exists()
    assert abs(model_cost(load(report.output)).macs / (0.5 * report.before.macs) - 1) <= 0.01
    onnx.checker.check_model(onnx.load(report.output), full_check=True)
    session = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (1, 10)
    with pytest.raises(PlanError, match="gnnrl, amc and agmc"):
        pipeline.compress_file(models["vgg_bn"], tmp_path / "r.onnx", target=0.5, agent="random", data=data,
                               policy=saved)


def test_wrong_kind_or_foreign_policy_is_refused(space: SearchSpace, tmp_path: Path) -> None:
    amc_run = ddpg_search(_env(space), AMCStates(_env(space)), 1, seed=0, agent="amc", config=SMALL)
    amc_file = tmp_path / "amc.agent.pt"
    amc_file.write_bytes(export_policy(amc_run, "amc", AMCStates(_env(space)), space.max_ratio, SMALL).to_bytes())
    with pytest.raises(PlanError, match=r"trained by --agent amc, not agmc") as err:
        run_ddpg(_env(space), "agmc", 1, seed=0, output=tmp_path / "o.onnx", config=SMALL, policy=amc_file)
    assert "\n" not in str(err.value)
    with pytest.raises(PlanError, match="does not fit this agent") as err:  # hidden 32 vs the default 300
        run_ddpg(_env(space), "amc", 1, seed=0, output=tmp_path / "o.onnx", config=DDPGConfig(), policy=amc_file)
    assert "\n" not in str(err.value)
    foreign = tmp_path / "gnnrl.agent.pt"
    torch.save({"format": "gnnrl-agent-1", "policy": {}}, foreign)
    with pytest.raises(PlanError, match="not an onnxprune DDPG agent") as err:
        run_ddpg(_env(space), "amc", 1, seed=0, output=tmp_path / "o.onnx", config=SMALL, policy=foreign)
    assert "\n" not in str(err.value)
    garbage = tmp_path / "junk.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(PlanError, match="not an onnxprune DDPG agent") as err:
        run_ddpg(_env(space), "amc", 1, seed=0, output=tmp_path / "o.onnx", config=SMALL, policy=garbage)
    assert "\n" not in str(err.value)
