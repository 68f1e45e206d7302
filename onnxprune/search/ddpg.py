"""DDPG over per-group actions, as in AGMC (Yu et al.) and AMC (He et al.).

Read top to bottom:

1. :class:`DDPGConfig` - every hyper-parameter, with the paper's value as default.
2. :class:`~onnxprune.search.replay.ReplayBuffer`, :func:`noise_sigma`, :func:`truncated_normal`
   - the small pieces the unit tests pin down with numbers (the networks, :func:`soft_update` and
   the policy loss are in :mod:`onnxprune.search.ddpg_nets`).
3. :class:`DDPGAgent` - actor ``mu(s)`` and critic ``Q(s, a)`` (two hidden layers of 300 units),
   target copies, the update ``(y - Q(s, a))^2`` with ``y = r - b + gamma Q'(s', mu'(s'))``
   (``b``: moving average of the batch rewards) and the policy loss: ``-Q(s, R(mu(s)))`` over
   whole replayed episodes, with ``R`` Algorithm 1 linearized (``through_rescale``, default), or
   the papers' per-step ``-Q(s, mu(s))``. The environment rescales every action vector to the
   target, so only the gradient through ``R`` tells the actor which groups to prune *more* in
   exchange; the per-step loss tells every group to prune less and the actor ends at a bound.
4. :func:`ddpg_search` - episodes: one action per group (random during warm-up, then the actor
   plus exponentially decayed truncated-normal noise), Algorithm 1 rescaling and scoring in the
   environment, one transition per group step with the episode's reward on every step (AMC),
   then one update per step. With the ``agmc`` state the critic's loss also trains the
   encoder-decoder (``train_encoder``): the replayed states are rebuilt from their memos by the
   current encoder (with gradients) and the next states by a target copy of it (soft-updated like
   the other targets), and a DiffPool encoder's auxiliary loss (link prediction + entropy of the
   replayed batch) is added to the critic's loss for the encoder; the actor sees the states
   detached, so only the critic shapes the embedding. After every episode the whole agent
   (weights, optimizers, replay, random generators) is saved in the
   :class:`~onnxprune.search.baselines.SearchState`, so a resumed run continues exactly as the
   uninterrupted one would.

Randomness comes only from the generators built from the run's seed: ``torch.Generator`` for
the initial weights, ``np.random.Generator`` for warm-up actions, noise and replay sampling.
"""

from __future__ import annotations

import base64
import copy
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from onnxprune.errors import PlanError
from onnxprune.search.baselines import OnEpisode, SearchState
from onnxprune.search.ddpg_nets import Actor, Critic, rescaled_actor_loss, soft_update
from onnxprune.search.ddpg_policy import DDPGPolicy
from onnxprune.search.rescale import group_weights
from onnxprune.search.replay import ReplayBuffer
from onnxprune.search.env import CompressionEnv, Episode
from onnxprune.search.states import StateBuilder
from onnxprune.search.threads import torch_threads

__all__ = ["DDPGAgent", "DDPGConfig", "ReplayBuffer", "ddpg_search", "default_warmup", "export_policy",
           "noise_sigma", "replay_states", "soft_update", "torch_threads", "truncated_normal"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DDPGConfig:
    """Hyper-parameters of the DDPG agent (defaults: AGMC / AMC).

    Attributes:
        hidden: Units in each of the two hidden layers of the actor and of the critic.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critic.
        tau: Soft target update rate, ``theta' <- (1 - tau) theta' + tau theta``.
        gamma: Discount of the next state's value (1: the episode reward is all that counts).
        warmup: Episodes of uniformly random actions before the actor acts and learns.
        init_delta: Standard deviation of the exploration noise in the first episode after warm-up.
        delta_decay: Per-episode factor of that standard deviation (exponential decay).
        batch_size: Transitions per update.
        buffer_size: Transitions the replay buffer keeps (oldest dropped first).
        baseline_alpha: Step of the moving-average reward baseline ``b += alpha (mean(r) - b)``.
        updates_per_step: Gradient updates per stored transition after warm-up.
        torch_threads: Torch intra-op threads while the search runs (restored after). The networks
            are small: on a busy 2-core machine 2 threads made 12 updates take 3.7 s instead of 0.35 s.
        train_encoder: Train a state builder's encoder-decoder (``agmc``) through the critic's loss;
            False keeps it a fixed seeded random network. On ResNet-56 (30 groups) training adds about
            10-15 ms per update, 0.3-0.45 s per episode, on the busy 2-core machine
            (``tools/bench_agmc_encoder.py``).
        encoder_lr: Adam learning rate of the encoder-decoder (a tenth of the critic's, so the
            actor's inputs move slowly).
        through_rescale: Take the actor's gradient through Algorithm 1 (linearized, over whole
            replayed episodes; :func:`~onnxprune.search.ddpg_nets.rescaled_actor_loss`). False is the
            papers' per-step ``-Q(s, mu(s))``, which drifts to a uniform plan under the rescaling.
        level_penalty: Weight of the penalty keeping the actor's requested level near the target
            (only with ``through_rescale``).
    """

    hidden: int = 300
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    gamma: float = 1.0
    warmup: int = 100
    init_delta: float = 0.5
    delta_decay: float = 0.95
    batch_size: int = 64
    buffer_size: int = 2000
    baseline_alpha: float = 0.5
    updates_per_step: int = 1
    torch_threads: int = 1
    train_encoder: bool = True
    encoder_lr: float = 1e-4
    through_rescale: bool = True
    level_penalty: float = 0.01


def noise_sigma(config: DDPGConfig, episode: int) -> float:
    """Exploration noise of ``episode``: ``init_delta * delta_decay ** (episode - warmup)`` (0 in warm-up)."""
    if episode < config.warmup:
        return 0.0
    return config.init_delta * config.delta_decay ** (episode - config.warmup)


def truncated_normal(mu: float, sigma: float, low: float, high: float, rng: np.random.Generator) -> float:
    """One draw of ``N(mu, sigma)`` conditioned on ``[low, high]`` (rejection, then clipping)."""
    if sigma <= 0.0:
        return float(np.clip(mu, low, high))
    for _ in range(100):
        x = float(rng.normal(mu, sigma))
        if low <= x <= high:
            return x
    return float(np.clip(mu, low, high))


class DDPGAgent:
    """Actor, critic, their targets and optimizers, the replay buffer and the reward baseline.

    Given ``states`` with an encoder-decoder (``states.net``), the agent owns that network too:
    it is saved and restored with the agent, and with ``config.train_encoder`` it has a target
    copy and an optimizer and learns through the critic's loss.
    """

    def __init__(self, state_dim: int, max_ratio: float, config: DDPGConfig, *, generator: torch.Generator,
                 rng: np.random.Generator, states: StateBuilder | None = None,
                 weights: np.ndarray | None = None, action_dim: int = 1) -> None:
        """Build the networks from ``generator``; ``rng`` drives actions, noise and sampling.

        ``weights`` (``[G]``, Algorithm 1's ``W_t``) turn on the actor loss through the rescaling
        when ``config.through_rescale``; without them the actor loss is the per-step one.
        ``action_dim`` 3 is the joint search's ``(ratio, weight bits, activation bits)``.
        """
        self.config, self.max_ratio, self.rng, self.action_dim = config, max_ratio, rng, action_dim
        self.weights = (torch.as_tensor(weights, dtype=torch.float32)
                        if weights is not None and config.through_rescale else None)
        self.actor = Actor(state_dim, config.hidden, max_ratio, generator, action_dim)
        self.critic = Critic(state_dim, config.hidden, max_ratio, generator, action_dim)
        self.actor_target = Actor(state_dim, config.hidden, max_ratio, generator, action_dim)
        self.critic_target = Critic(state_dim, config.hidden, max_ratio, generator, action_dim)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.states = states
        self.net = states.net if states is not None else None
        self.net_target: nn.Module | None = None
        self.net_opt: torch.optim.Optimizer | None = None
        if self.net is not None and states is not None and config.train_encoder:
            self.net_target = copy.deepcopy(self.net).requires_grad_(False)
            self.net_opt = torch.optim.Adam(self.net.parameters(), lr=config.encoder_lr)
        memo_dim = states.memo_dim if self.net_opt is not None and states is not None else 0
        self.buffer = ReplayBuffer(config.buffer_size, 0 if memo_dim else state_dim, memo_dim, action_dim)
        self.baseline: float | None = None

    @torch.no_grad()
    def greedy(self, state: np.ndarray) -> float | np.ndarray:
        """The actor's action for ``state`` (no noise; joint: a ``[3]`` array)."""
        out = self.actor(torch.from_numpy(state).unsqueeze(0))[0]
        return float(out) if self.action_dim == 1 else out.numpy().astype(np.float64)

    def act(self, state: np.ndarray, episode: int) -> float | np.ndarray:
        """Uniform in ``[0, max_ratio]`` during warm-up, else the actor plus truncated-normal noise.

        Joint: bit actions are uniform in ``[0, 1]`` in warm-up, else noised the same way in ``[0, 1]``.
        """
        if self.action_dim == 1:
            if episode < self.config.warmup:
                return float(self.rng.uniform(0.0, self.max_ratio))
            return truncated_normal(float(self.greedy(state)), noise_sigma(self.config, episode), 0.0,
                                    self.max_ratio, self.rng)
        highs = [self.max_ratio] + [1.0] * (self.action_dim - 1)
        if episode < self.config.warmup:
            return np.array([self.rng.uniform(0.0, h) for h in highs])
        mean = np.asarray(self.greedy(state))
        sigma = noise_sigma(self.config, episode)
        return np.array([truncated_normal(float(m), sigma * h / self.max_ratio, 0.0, h, self.rng)
                         for m, h in zip(mean, highs)])

    def _batch(self) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """A replayed batch and the encoder's auxiliary loss (``None``: none).

        With a trained encoder, ``s`` is re-encoded (with gradients) and ``s'`` by its target.
        """
        idx = self.buffer.draw(self.config.batch_size, self.rng)
        s, a, r, s2, done = self.buffer.take(idx)
        aux = None
        if self.net_opt is not None and self.states is not None and self.net is not None:
            memo, next_memo = self.buffer.take_memos(idx)
            s, aux = self.states.encode_with_loss(memo, self.net)
            with torch.no_grad():
                s2 = self.states.encode(next_memo, self.net_target)
        return (s, a, r, s2, done), aux

    def update(self) -> tuple[float, float] | None:
        """One gradient step of critic (and encoder) and actor, soft target updates; ``(critic, actor)`` losses."""
        cfg = self.config
        if self.buffer.size < cfg.batch_size:
            return None
        (s, a, r, s2, done), aux = self._batch()
        mean = float(r.mean())
        self.baseline = mean if self.baseline is None else self.baseline + cfg.baseline_alpha * (mean - self.baseline)
        with torch.no_grad():
            y = r - self.baseline + cfg.gamma * (1.0 - done) * self.critic_target(s2, self.actor_target(s2))
        critic_loss = torch.mean((y - self.critic(s, a)) ** 2)
        self.critic_opt.zero_grad()
        if self.net_opt is not None:
            self.net_opt.zero_grad()
        (critic_loss if aux is None else critic_loss + aux).backward()  # aux reaches only the encoder
        self.critic_opt.step()
        if self.net_opt is not None:
            self.net_opt.step()
        actor_loss = self._actor_loss(s.detach())
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        soft_update(self.actor_target, self.actor, cfg.tau)
        soft_update(self.critic_target, self.critic, cfg.tau)
        if self.net is not None and self.net_target is not None:
            soft_update(self.net_target, self.net, cfg.tau)
        return float(critic_loss.detach()), float(actor_loss.detach())

    def _actor_loss(self, s: Tensor) -> Tensor:
        """Through Algorithm 1 on whole replayed episodes (``weights`` given), else ``-Q(s, mu(s))`` on ``s``."""
        if self.weights is not None:
            groups = len(self.weights)
            rows = self.buffer.episode_rows(groups)
            if len(rows):
                take = min(len(rows), -(-self.config.batch_size // groups))
                idx = rows[self.rng.choice(len(rows), size=take, replace=False)].reshape(-1)
                stored = torch.from_numpy(self.buffer.actions[idx]).reshape(take, groups, -1).squeeze(-1)
                return rescaled_actor_loss(self.actor, self.critic, self._states_of(idx), stored, self.weights,
                                           self.config.level_penalty)
        return -self.critic(s, self.actor(s)).mean()

    @torch.no_grad()
    def _states_of(self, idx: np.ndarray) -> Tensor:
        """Stored states of rows ``idx`` (re-encoded by the current encoder when it is trained)."""
        if self.net_opt is not None and self.states is not None and self.net is not None:
            return self.states.encode(self.buffer.take_memos(idx)[0], self.net)
        return torch.from_numpy(self.buffer.states[idx])

    def _modules(self) -> dict[str, Any]:
        """The networks and optimizers that exist, by checkpoint name."""
        named = {"actor": self.actor, "critic": self.critic, "actor_target": self.actor_target,
                 "critic_target": self.critic_target, "actor_opt": self.actor_opt, "critic_opt": self.critic_opt,
                 "net": self.net, "net_target": self.net_target, "net_opt": self.net_opt}
        return {name: module for name, module in named.items() if module is not None}

    def to_json(self) -> dict[str, Any]:
        """Everything needed to continue: weights, optimizers, replay (base64 ``torch.save``), generator."""
        blob = io.BytesIO()
        tensors = {name: module.state_dict() for name, module in self._modules().items()}
        torch.save({**tensors, "buffer": self.buffer.arrays()}, blob)
        return {"format": "ddpg-2", "tensors": base64.b64encode(blob.getvalue()).decode("ascii"),
                "rng": self.rng.bit_generator.state, "baseline": self.baseline}

    def load_json(self, saved: dict[str, Any]) -> None:
        """Inverse of :meth:`to_json`."""
        try:
            if saved.get("format") != "ddpg-2":
                raise ValueError(f"format {saved.get('format')!r}")
            tensors = torch.load(io.BytesIO(base64.b64decode(saved["tensors"])), weights_only=True)
            for name, module in self._modules().items():
                module.load_state_dict(tensors[name])
            self.buffer.load_arrays(tensors["buffer"])
            self.rng.bit_generator.state = saved["rng"]
            self.baseline = None if saved["baseline"] is None else float(saved["baseline"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise PlanError(f"--resume: the DDPG agent in the checkpoint cannot be loaded ({exc}); "
                            "run without --resume") from exc

    def policy(self, kind: str) -> DDPGPolicy:
        """The trained networks (no optimizers, no replay) as a policy for another model."""
        names = [n for n in ("actor", "critic", "actor_target", "critic_target", "net", "net_target")
                 if n in self._modules()]
        networks = {n: copy.deepcopy(self._modules()[n].state_dict()) for n in names}
        return DDPGPolicy(kind=kind, state_dim=self.actor.net[0].in_features, config=asdict(self.config),
                          networks=networks, pool=self.states.pool if self.states is not None else None)

    def load_policy(self, policy: DDPGPolicy, source: str) -> None:
        """Start from ``policy``'s networks; optimizers and replay stay fresh.

        A policy whose encoder was not trained has no ``net_target``: the target starts as its ``net``.
        """
        nets = policy.networks
        pool = self.states.pool if self.states is not None else None
        if pool is not None and policy.pool != pool:
            raise PlanError(f"{source} was trained with --agmc-pool {policy.pool}, not {pool}; pass --agmc-pool "
                            f"{policy.pool} or a policy from an --agmc-pool {pool} run")
        try:
            for name, module in self._modules().items():
                if name.endswith("_opt"):
                    continue
                key = "net" if name == "net_target" and name not in nets else name
                module.load_state_dict(nets[key])
        except (KeyError, RuntimeError) as exc:
            reason = next(iter(str(exc).splitlines()), type(exc).__name__)
            raise PlanError(f"{source} does not fit this agent ({reason}); pass a policy trained with the same "
                            "network sizes") from exc


def export_policy(state: SearchState, kind: str, states: StateBuilder, max_ratio: float,
                  config: DDPGConfig, action_dim: int = 1) -> DDPGPolicy:
    """The policy of the agent saved in ``state`` (the end of :func:`ddpg_search`)."""
    learner = DDPGAgent(states.dim, max_ratio, config, generator=torch.Generator().manual_seed(0),
                        rng=np.random.default_rng(0), states=states, action_dim=action_dim)
    learner.load_json(state.agent_state)
    return learner.policy(kind)


def ddpg_search(env: CompressionEnv[Any], states: StateBuilder, episodes: int, *, seed: int, agent: str = "amc",
                config: DDPGConfig | None = None, state: SearchState | None = None,
                on_episode: OnEpisode | None = None, policy: DDPGPolicy | None = None) -> SearchState:
    """Run DDPG for ``episodes`` episodes (a resumed run does only the rest); best episode by reward.

    Args:
        env: The environment (rescales to the target, builds and scores candidates).
        states: The per-group state (``amc`` handcrafted or ``agmc`` encoder-decoder).
        episodes: Total episodes of the run.
        seed: Seeds the weights (``torch.Generator``) and actions, noise, sampling (``np`` generator).
        agent: Name recorded in the state.
        config: Hyper-parameters (default :class:`DDPGConfig`).
        state: A checkpointed state to resume from (must come from the same settings).
        on_episode: Progress / checkpoint callback, after each episode.
        policy: Networks to start from (topology transfer; check its kind and size first, e.g.
            :meth:`DDPGPolicy.check`). Ignored when ``state`` already holds an agent.
    """
    if episodes < 1:
        raise PlanError(f"--episodes {episodes}: give 1 or more")
    config = config or DDPGConfig()
    with torch_threads(config.torch_threads):
        return _search(env, states, episodes, seed=seed, agent=agent, config=config, state=state,
                       on_episode=on_episode, policy=policy)


def _search(env: CompressionEnv[Any], states: StateBuilder, episodes: int, *, seed: int, agent: str,
            config: DDPGConfig, state: SearchState | None, on_episode: OnEpisode | None,
            policy: DDPGPolicy | None) -> SearchState:
    """The loop of :func:`ddpg_search` (arguments as there)."""
    weights = group_weights(env.space, env.prune_metric) if config.through_rescale else None
    learner = DDPGAgent(states.dim, env.space.max_ratio, config, generator=torch.Generator().manual_seed(seed),
                        rng=np.random.default_rng(seed), states=states, weights=weights,
                        action_dim=env.action_dim)
    state = state or SearchState(agent=agent, seed=seed)
    if state.agent_state is not None:
        learner.load_json(state.agent_state)
    elif policy is not None:
        learner.load_policy(policy, "--policy")
    steps = len(env.space)
    current = [state]

    def learn(episode: Episode, candidate: Any) -> None:
        """Store the episode's replayed transitions, update past the warm-up, record and report it."""
        index = episode.index
        applied = env.applied(episode)  # Algorithm 1's rescaled actions (and bits): what the candidate was built from
        observed, memos = replay_states(states, applied)
        for t in range(steps):  # the last step's s' is masked by done; its memo is any valid one
            last = t == steps - 1
            learner.buffer.add(observed[t], applied[t], episode.reward,
                               np.zeros_like(observed[t]) if last else observed[t + 1], last,
                               memos[t], memos[t] if last else memos[t + 1], episode=index, step=t)
        if index >= config.warmup:  # one update per stored step, as AMC
            losses = [learner.update() for _ in range(steps * config.updates_per_step)]
            if losses[-1] is not None:
                logger.debug("episode %d: critic loss %.5f, actor loss %.5f", index, *losses[-1])
        recorded, better = current[0].record(episode)
        current[0] = replace(recorded, agent_state=learner.to_json())
        if on_episode is not None:
            on_episode(episode, current[0], candidate, better)

    index = state.next_episode
    while index < episodes:
        # warm-up actions ignore the results, so the whole warm-up goes to the executor as one batch
        stop = min(config.warmup, episodes) if index < config.warmup else index + 1
        batch = []
        for episode_index in range(index, stop):
            actions: list[Any] = []
            states.begin()
            for t in range(steps):
                actions.append(learner.act(states.state(t, actions), episode_index))
            batch.append(actions)
        env.evaluate_many(batch, start=index, on_result=learn)
        index = stop
    return current[0]


def replay_states(states: StateBuilder, applied: Sequence[Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """States and memos of an episode replayed with the ``applied`` (rescaled) actions.

    The replay buffer stores these transitions, not the requested actions: Algorithm 1 makes the
    level of the requested actions irrelevant (any vector is rescaled to the target), so a critic
    trained on them cannot tell 0.8 everywhere from 0.5 everywhere and the actor drifts into its
    sigmoid's saturation (seen on ResNet-56: after the warm-up both amc and agmc asked for 0.74-0.80
    in all 30 groups, a uniform plan plus noise, with no gradient left to leave it).
    """
    observed, memos = [], []
    states.begin()
    for t in range(len(applied)):
        observed.append(states.state(t, applied[:t]))
        memos.append(states.memo())
    return observed, memos


def default_warmup(episodes: int) -> int:
    """Warm-up episodes when none are given: ``min(100, episodes // 3)``."""
    return min(100, episodes // 3)
