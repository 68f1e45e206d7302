"""GNN-RL's agent: PPO over the m-GNN policy, in the style of cleanrl's ``ppo_continuous_action``.

Read top to bottom: :class:`~onnxprune.search.ppo_config.PPOConfig` (every knob, in its own
module), :func:`gae` (advantages), one episode (:func:`play_episode`), one PPO update
(:func:`ppo_update`), the loop (:func:`ppo_search`) and the agent checkpoint (:class:`AgentCheckpoint`).

**Episode (multi-step, as GNN-RL).** An episode takes ``PPOConfig.steps`` pruning steps. At step
``k`` the state is the m-GNN embedding of the network as pruned so far (the graph is updated in
place, not rebuilt from ONNX); the policy draws one Gaussian action vector ``a_k`` (per group,
the fraction of the *remaining* channels to remove); the removed fractions become
``r <- 1 - (1 - r)(1 - clip(a_k, 0, max_ratio))`` and are rescaled with AGMC's Algorithm 1
(:func:`~onnxprune.search.rescale.rescale`) to the intermediate target ``target * (k + 1) / steps``,
so each step prunes a fraction more and the last one lands on the target. Only the last step
builds and scores a candidate: its reward is the environment's reward (validation accuracy of
the pruned model, e.g. ``R_err = -error``); earlier steps get reward 0. ``steps=1`` is the
one-step-per-episode variant.

**Update (interpolated policy gradient).** The actor's loss is PPO's clipped surrogate plus
``critic_weight`` times an off-policy term: the value, under a plan critic fitted to every episode
so far, of the policy mean's request after Algorithm 1 (:mod:`~onnxprune.search.ppo_critic`, which
says why plain PPO was too slow here). ``critic_weight=0`` is plain PPO.

**Reproducibility.** All randomness (parameters, action noise, minibatch order) comes from one
``torch.Generator`` seeded with the run's seed; its state is in the checkpoint, so a run resumed
from an update boundary continues exactly as the uninterrupted run (on CPU).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from onnxprune.embed import make_generator
from onnxprune.errors import PlanError
from onnxprune.search.threads import torch_threads
from onnxprune.search.baselines import OnEpisode, SearchState
from onnxprune.search.env import CompressionEnv, Episode
from onnxprune.search.gnn_policy import GNNPolicy, Observation, PolicyGraph
from onnxprune.search.ppo_config import NETWORK_FIELDS, PPOConfig
from onnxprune.search.ppo_critic import PlanCritic, PlanReplay, critic_actor_loss, fit_critic, plan_features
from onnxprune.search.rescale import group_weights, rescale

logger = logging.getLogger(__name__)

AGENT_FORMAT = 2  # version of the agent checkpoint layout (2: with the plan critic and its replay)
CriticTerm = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Transition:
    """One step of an episode, as stored in the rollout."""

    obs: Observation
    action: Tensor
    logprob: float
    value: float
    reward: float
    done: bool
    applied: tuple[float, ...] = ()


def gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, next_value: float, *, gamma: float,
        lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation over a rollout.

    ``delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t`` and
    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}``.

    Args:
        rewards: ``[T]`` rewards.
        values: ``[T]`` critic values of the states.
        dones: ``[T]`` 1 where step ``t`` ended its episode (nothing is bootstrapped across it).
        next_value: Value of the state after the last step (used only if it did not end an episode).
        gamma: Discount factor.
        lam: GAE's lambda.

    Returns:
        ``(advantages, returns)``, each ``[T]``; ``returns = advantages + values``.
    """
    advantages = np.zeros(len(rewards), dtype=np.float64)
    last = 0.0
    for t in reversed(range(len(rewards))):
        following = next_value if t == len(rewards) - 1 else float(values[t + 1])
        live = 1.0 - float(dones[t])
        delta = float(rewards[t]) + gamma * following * live - float(values[t])
        last = delta + gamma * lam * live * last
        advantages[t] = last
    return advantages, advantages + np.asarray(values, dtype=np.float64)


def centered_ranks(rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
    """Episode rewards (at the steps that end an episode) as centered ranks in ``[-0.5, 0.5]``.

    The lowest final reward of the rollout becomes -0.5, the highest 0.5, equal rewards share their
    mean rank; other steps keep their reward (0 in this environment). A single episode gets 0.
    """
    out = np.asarray(rewards, dtype=np.float64).copy()
    ends = np.flatnonzero(np.asarray(dones, dtype=bool))
    if len(ends) < 2:
        out[ends] = 0.0
        return out
    finals = out[ends]
    ranks = np.empty(len(finals))
    for value in np.unique(finals):
        where = finals == value
        below = int((finals < value).sum())
        ranks[where] = below + (where.sum() - 1) / 2.0
    out[ends] = ranks / (len(finals) - 1) - 0.5
    return out


def play_episode(env: CompressionEnv[Any], graph: PolicyGraph, policy: GNNPolicy, config: PPOConfig,
                 generator: torch.Generator,
                 mirror: list[Tensor] | None = None) -> tuple[list[Transition], list[Any], list[Tensor]]:
    """Play one episode: ``config.steps`` pruning steps; the last one's request is scored later by ``env``.

    Args:
        mirror: The standard-normal noise of the paired episode, one tensor per step: this episode
            uses its negation instead of drawing new noise (``None``: draw).

    Returns:
        The transitions (the last one's reward and applied actions still to fill in from the scored
        episode, :func:`scored`), the last step's requested actions and the noise used per step.
    """
    space = env.space
    removed = np.zeros(len(space))
    transitions: list[Transition] = []
    noises: list[Tensor] = []
    joint = env.bits is not None
    # before the policy picks bits every group is at the largest allowed widths (features 1, 1 for 8 / 16)
    bits = np.tile([env.bits.w_set[-1], env.bits.a_set[-1]], (len(space), 1)).astype(np.float64) if env.bits else None
    for k in range(config.steps):
        obs = graph.observe(removed, k / config.steps, env.target, bits)
        with torch.no_grad():
            dist, value = policy(obs)
            noise = -mirror[k] if mirror is not None else torch.randn(dist.mean.shape, generator=generator)
            noises.append(noise)
            action = dist.mean + dist.stddev * noise
            logprob = float(dist.log_prob(action).sum())
        raw = action.numpy().astype(np.float64)
        step = np.clip(raw[:, 0] if joint else raw, 0.0, space.max_ratio)
        requested = 1.0 - (1.0 - removed) * (1.0 - step)
        if joint:  # the bits of the last step are the episode's; earlier ones only enter the next state
            bits = np.array([env.bit_features(np.concatenate([[0.0], row[1:]])) for row in raw]) * [8.0, 16.0]
            requested = np.concatenate([requested[:, None], np.clip(raw[:, 1:], 0.0, 1.0)], axis=1)
        if k < config.steps - 1:
            fitted = rescale(space, requested[:, 0] if joint else requested, env.target * (k + 1) / config.steps,
                             metric=env.prune_metric, tol=config.step_tol)
            removed = np.asarray(fitted.actions, dtype=np.float64)
            transitions.append(Transition(obs, action, logprob, float(value), 0.0, False))
            continue
        transitions.append(Transition(obs, action, logprob, float(value), 0.0, True))
    return transitions, requested.tolist(), noises


def scored(transitions: list[Transition], episode: Episode) -> list[Transition]:
    """``transitions`` of a played episode with the last step's reward and applied actions from ``episode``."""
    return [*transitions[:-1], replace(transitions[-1], reward=episode.reward, applied=episode.actions)]


def ppo_update(policy: GNNPolicy, optimizer: torch.optim.Optimizer, rollout: list[Transition], config: PPOConfig,
               generator: torch.Generator, critic_term: CriticTerm | None = None) -> dict[str, float]:
    """One PPO update (clipped surrogate, clipped value loss, entropy bonus) on a rollout of whole episodes.

    Args:
        critic_term: The off-policy term of the actor's loss, called with the ``[E, G]`` requested
            removed fractions of the policy mean at the minibatch's last steps and the ``[E, G]``
            actions those episodes applied; added with weight ``config.critic_weight``.

    Returns:
        Statistics of the last minibatch: ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``.
    """
    rewards = np.array([t.reward for t in rollout])
    if config.rank_rewards:
        rewards = centered_ranks(rewards, np.array([t.done for t in rollout]))
    values = np.array([t.value for t in rollout])
    advantages, returns = gae(rewards, values, np.array([t.done for t in rollout], dtype=np.float64), 0.0,
                              gamma=config.gamma, lam=config.gae_lambda)
    adv_all, ret_all = torch.as_tensor(advantages, dtype=torch.float32), torch.as_tensor(returns, dtype=torch.float32)
    old_logp = torch.tensor([t.logprob for t in rollout])
    old_value = torch.tensor([t.value for t in rollout])
    size = max(1, math.ceil(len(rollout) / config.minibatches))
    stats: dict[str, float] = {}
    for _ in range(config.update_epochs):
        order = torch.randperm(len(rollout), generator=generator)
        for start in range(0, len(rollout), size):
            mb = order[start:start + size]
            outs = [policy(rollout[int(i)].obs) for i in mb]
            new_logp = torch.stack([d.log_prob(rollout[int(i)].action).sum() for (d, _), i in zip(outs, mb)])
            entropy = torch.stack([d.entropy().sum() for d, _ in outs]).mean()
            new_value = torch.stack([v for _, v in outs])
            log_ratio = new_logp - old_logp[mb]
            ratio = log_ratio.exp()
            adv = adv_all[mb]
            if config.norm_adv and len(mb) > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)).mean()
            v_loss_plain = (new_value - ret_all[mb]) ** 2
            if config.clip_vloss:
                clipped = old_value[mb] + (new_value - old_value[mb]).clamp(-config.clip_coef, config.clip_coef)
                v_loss = 0.5 * torch.max(v_loss_plain, (clipped - ret_all[mb]) ** 2).mean()
            else:
                v_loss = 0.5 * v_loss_plain.mean()
            loss = pg_loss - config.ent_coef * entropy + config.vf_coef * v_loss
            finals = [(k, int(i)) for k, i in enumerate(mb) if rollout[int(i)].done]
            if critic_term is not None and finals:
                means = torch.stack([outs[k][0].mean for k, _ in finals])
                means = means[..., 0] if means.dim() == 3 else means  # joint: the ratios
                removed = torch.stack([rollout[i].obs.groups[:, 0] for _, i in finals])
                stored = torch.tensor([rollout[i].applied for _, i in finals], dtype=torch.float32)
                loss = loss + config.critic_weight * critic_term(1.0 - (1.0 - removed) * (1.0 - means), stored)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                approx_kl = float(((ratio - 1) - log_ratio).mean())
            stats = {"policy_loss": float(pg_loss.detach()), "value_loss": float(v_loss.detach()),
                     "entropy": float(entropy.detach()), "approx_kl": approx_kl}
        if config.target_kl is not None and stats.get("approx_kl", 0.0) > config.target_kl:
            break
    return stats


@dataclass(frozen=True)
class AgentCheckpoint:
    """A trained (or training) agent: enough to resume the run or to start another model's search.

    Attributes:
        config: The PPO configuration.
        policy: The network's ``state_dict``.
        optimizer: Adam's ``state_dict``.
        rng: State of the run's ``torch.Generator``.
        search: The :class:`SearchState` at this point, as JSON.
        updates: PPO updates done.
        critic: The plan critic's ``state_dict`` and its Adam's, keys ``net`` and ``optimizer``
            (empty in agents written before the critic).
        replay: The plan critic's :class:`~onnxprune.search.ppo_critic.PlanReplay` as JSON.
    """

    config: PPOConfig
    policy: Mapping[str, Tensor]
    optimizer: Mapping[str, Any]
    rng: Tensor
    search: Mapping[str, Any]
    updates: int
    critic: Mapping[str, Any] = field(default_factory=dict)
    replay: Mapping[str, Any] = field(default_factory=dict)

    def to_bytes(self, extra: Mapping[str, Any] | None = None) -> bytes:
        """Serialized with ``torch.save`` (only tensors and plain values; ``extra`` must be JSON-ready)."""
        buffer = io.BytesIO()
        torch.save({"format": AGENT_FORMAT, "config": asdict(self.config), "policy": dict(self.policy),
                    "optimizer": dict(self.optimizer), "rng": self.rng, "search": json.dumps(self.search),
                    "updates": self.updates, "extra": json.dumps(dict(extra or {})),
                    "critic": dict(self.critic), "replay": json.dumps(dict(self.replay))}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "agent") -> tuple[AgentCheckpoint, dict[str, Any]]:
        """Inverse of :meth:`to_bytes`; returns the checkpoint and its ``extra``."""
        try:
            raw = torch.load(io.BytesIO(data), weights_only=True)
            if raw.get("format") not in (1, AGENT_FORMAT):
                raise ValueError(f"format {raw.get('format')} (expected {AGENT_FORMAT})")
            known = {f.name for f in fields(PPOConfig)}
            old = {"critic_weight": 0.0} if raw["format"] == 1 else {}  # trained as plain PPO
            config = PPOConfig(**{**old, **{k: v for k, v in raw["config"].items() if k in known}})
            return cls(config=config, policy=raw["policy"], optimizer=raw["optimizer"], rng=raw["rng"],
                       search=json.loads(raw["search"]), updates=int(raw["updates"]),
                       critic=raw.get("critic", {}), replay=json.loads(raw.get("replay", "{}"))), json.loads(raw["extra"])
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise PlanError(f"{source} is not an onnxprune gnnrl agent ({exc}); pass a <out>.agent.pt "
                            "written by `onnxprune compress --agent gnnrl`") from exc


def ppo_search(env: CompressionEnv[Any], episodes: int, *, seed: int, config: PPOConfig | None = None,
               resume: AgentCheckpoint | None = None, transfer: AgentCheckpoint | None = None,
               on_episode: OnEpisode | None = None,
               on_update: Callable[[AgentCheckpoint], None] | None = None) -> tuple[SearchState, AgentCheckpoint]:
    """Train the GNN-RL agent for ``episodes`` episodes on ``env``; the best episode is the result.

    Args:
        env: The environment (its space, target, metric, candidate builder and score).
        episodes: Total episodes of the run (a resumed run does only the rest).
        seed: Seed of the run.
        config: PPO hyperparameters (default :class:`PPOConfig`); a resumed run uses the checkpoint's.
        resume: Checkpoint of this run at an update boundary.
        transfer: An agent trained on another model: its network weights (and network shape) start
            the search; the optimizer and generator start fresh.
        on_episode: Called after every episode (progress, best model on disk).
        on_update: Called with the checkpoint after every update.

    Returns:
        The final search state and agent checkpoint.
    """
    if episodes < 1:
        raise PlanError(f"--episodes {episodes}: give 1 or more")
    chosen = resume.config if resume is not None else (config or PPOConfig())
    with torch_threads(chosen.torch_threads):
        return _train(env, episodes, seed=seed, config=chosen, resume=resume, transfer=transfer,
                      on_episode=on_episode, on_update=on_update)


def _train(env: CompressionEnv[Any], episodes: int, *, seed: int, config: PPOConfig, resume: AgentCheckpoint | None,
           transfer: AgentCheckpoint | None, on_episode: OnEpisode | None,
           on_update: Callable[[AgentCheckpoint], None] | None) -> tuple[SearchState, AgentCheckpoint]:
    """The loop of :func:`ppo_search`: collect ``episodes_per_update`` episodes, update, checkpoint."""
    if transfer is not None and resume is None:
        config = replace(config, **{k: getattr(transfer.config, k) for k in NETWORK_FIELDS})
    if env.bits is not None and config.steps > 1:
        raise PlanError("GNN-RL with --quantize takes one step per episode; set PPOConfig.steps to 1")
    generator = make_generator(seed)
    graph = PolicyGraph(env.space, env.prune_metric)
    policy = GNNPolicy(config.hidden, config.layers, max_ratio=env.space.max_ratio, init_std=config.init_std,
                       generator=generator, detach_critic=config.detach_critic, action_dim=env.action_dim)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, eps=1e-5)
    critic = PlanCritic(plan_features(env.space, env.prune_metric), config.critic_hidden, env.space.max_ratio,
                        generator)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.critic_lr)
    replay, weights = PlanReplay(config.replay_size), torch.as_tensor(group_weights(env.space, env.prune_metric),
                                                                       dtype=torch.float32)
    state, updates = SearchState(agent="gnnrl", seed=seed), 0
    if resume is not None:
        policy.load_state_dict(dict(resume.policy))
        optimizer.load_state_dict(dict(resume.optimizer))
        generator.set_state(resume.rng)
        state, updates = SearchState.from_json(dict(resume.search)), resume.updates
        if resume.critic:
            critic.load_state_dict(dict(resume.critic["net"]))
            critic_optimizer.load_state_dict(dict(resume.critic["optimizer"]))
            replay = PlanReplay.from_json(resume.replay)
    elif transfer is not None:  # the plan critic and its replay belong to the other model: fresh here
        try:
            policy.load_state_dict(dict(transfer.policy))
        except RuntimeError as exc:
            raise PlanError("--policy: the agent does not fit this run (trained with or without --quantize, or other "
                            "network sizes); pass one trained the same way") from exc

    def snapshot() -> AgentCheckpoint:
        return AgentCheckpoint(config=config, policy=copy.deepcopy(policy.state_dict()),
                               optimizer=copy.deepcopy(optimizer.state_dict()), rng=generator.get_state(),
                               search=state.to_json(), updates=updates,
                               critic={"net": copy.deepcopy(critic.state_dict()),
                                       "optimizer": copy.deepcopy(critic_optimizer.state_dict())},
                               replay=replay.to_json())

    def critic_term(requested: Tensor, stored: Tensor) -> Tensor:
        return critic_actor_loss(critic, requested, stored, weights, config.level_penalty)

    while state.next_episode < episodes:
        rollout: list[Transition] = []
        first = state.next_episode
        pair: list[Tensor] | None = None
        played: list[list[Transition]] = []
        batch: list[list[Any]] = []
        for index in range(first, min(episodes, first + config.episodes_per_update)):
            mirror = pair if config.mirrored and (index - first) % 2 == 1 else None
            transitions, requested, pair = play_episode(env, graph, policy, config, generator, mirror)
            played.append(transitions)
            batch.append(requested)

        def finish(episode: Episode, candidate: Any) -> None:
            """Scored in order: complete the episode's transitions, record it (the rollout goes as one batch)."""
            nonlocal state
            rollout.extend(scored(played[episode.index - first], episode))
            replay.add(episode.actions, episode.reward)
            state, better = state.record(episode)
            if on_episode is not None:
                on_episode(episode, state, candidate, better)

        env.evaluate_many(batch, start=first, on_result=finish)
        acting = config.critic_weight > 0 and len(replay) >= max(config.critic_start, 2)
        critic_loss = fit_critic(critic, critic_optimizer, replay, config.critic_steps) if acting else float("nan")
        stats = ppo_update(policy, optimizer, rollout, config, generator, critic_term if acting else None)
        stats["critic_loss"] = critic_loss
        updates += 1
        logger.info("PPO update %d after episode %d: %s", updates, state.next_episode - 1,
                    ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
        if on_update is not None:
            on_update(snapshot())
    return state, snapshot()
