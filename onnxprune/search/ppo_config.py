"""The configuration of GNN-RL's PPO agent: every knob with its measured effect."""

from __future__ import annotations

from dataclasses import dataclass

from onnxprune.errors import PlanError

__all__ = ["NETWORK_FIELDS", "PPOConfig"]


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of the GNN-RL PPO agent (cleanrl's defaults, except a larger learning rate,
    more epochs per update, whole-rollout minibatches, mirrored noise and a detached critic: a search
    has few, expensive episodes, and with one step per episode it is a contextual bandit).

    Defaults measured on ResNet-20 at 50 % MACs (reward: top-1 on 5,000 train images after a
    128-image reconstruction of each candidate, 100 episodes, ``tools/bench_search.py --ppo``):
    ``steps=1, init_std=0.25, lr=3e-3, update_epochs=10`` learn (mean reward per 20 episodes 73.5 ->
    75.0 %; the earlier ``steps=3, init_std=0.15, lr=1e-3`` stayed flat), but with two-episode
    minibatches and a critic sharing the encoder the final test top-1 was 81.46 % (seed 0). Adding
    ``minibatches=1`` (advantages normalized over the rollout) and ``mirrored=True``: 83.23 % (seed 0)
    and 83.23 % (seed 1, whose mean reward then *fell* from 70.5 to 64.4 %: the value loss moved the
    encoder the actor reads); with ``detach_critic=True`` as well: 83.55 % and 84.49 %, mean reward
    rising on both seeds (uniform 79.89 %, random search 81.06 / 82.67 %). ``steps > 1``
    (re-embedding the pruned graph between steps, as GNN-RL) spreads one reward over several
    actions and learns slower in short searches.

    The plan-critic term (``critic_weight``, :mod:`~onnxprune.search.ppo_critic`), test top-1 % at
    seeds 0 / 1 / 2. ``critic_weight=0.3``: ResNet-56 (60 episodes) 90.17 / 89.33 / 88.09; ResNet-20 (100 episodes)
    84.17 / 85.26 / 85.01. ``critic_weight=0.1``: 88.59 / 87.99 / 89.61 and 84.80 / 81.17 / 84.01. Plain PPO (0):
    88.05 / 88.35 / 87.57 and 83.55 / 84.49 / 82.62. Random search: 88.07 / 84.33 / 87.33 and
    81.06 / 82.67 / 81.79. Reward of the last 10 episodes on ResNet-56: 83.8 / 83.2 / 81.3 % (0.3),
    82.3 / 79.8 / 88.4 % (0.1), 74.9 / 87.3 / 80.8 % (plain). Annealing the noise instead (0.25 ->
    0.03 over the run, no critic) made ResNet-56 worse, 86.63 / - / 85.12 %: the mean had not
    learned, so exploiting it did not help.

    Attributes:
        steps: Pruning steps per episode; step ``k`` reaches ``target * (k + 1) / steps``.
        step_tol: Relative tolerance of the intermediate targets (only the next state depends on
            them; the last step meets the target within the environment's 1 %). Looser is cheaper.
        episodes_per_update: Episodes collected before each PPO update (the rollout).
        update_epochs: Passes over the rollout per update.
        minibatches: Minibatches per pass.
        learning_rate: Adam step size.
        gamma: Discount factor.
        gae_lambda: GAE's lambda.
        clip_coef: PPO ratio clipping (and value clipping) range.
        clip_vloss: Clip the value loss as PPO2 does.
        norm_adv: Normalize advantages per minibatch (when it has two or more samples).
        ent_coef: Weight of the entropy bonus.
        vf_coef: Weight of the value loss.
        max_grad_norm: Global gradient-norm clip.
        target_kl: Stop the update's epochs early above this approximate KL (``None``: never).
        hidden: Width of the m-GNN embedding and of the MLPs.
        layers: Message-passing rounds per m-GNN stage.
        init_std: Initial standard deviation of the per-group Gaussian (fraction-removed units).
        torch_threads: Torch intra-op threads while the agent runs (its tensors are tiny: more
            threads only add overhead, about 8x on a loaded 2-core machine; restored afterwards).
        mirrored: Antithetic sampling: the episodes of a rollout come in pairs whose Gaussian noise
            is ``z`` and ``-z`` (each episode is still a sample of the policy; the pair's reward
            difference is a low-variance finite difference along ``z``, as in evolution strategies).
        detach_critic: The value loss trains only the critic's MLP, not the m-GNN encoder that the
            actor shares (with one step per episode the critic is only a baseline).
        rank_rewards: Replace each episode's reward by its centered rank in the rollout (in
            ``[-0.5, 0.5]``, ES fitness shaping) before the advantages, so one collapsed candidate
            (a group cut past what the model tolerates) does not dominate an update. Off: measured
            test top-1 83.55 / 83.83 % (ResNet-20, seeds 0 / 1) and 87.53 / 88.79 % (ResNet-56),
            against 83.55 / 84.49 % and 88.05 / 88.35 % without it.
        critic_weight: Weight ``nu`` of the off-policy plan-critic term in the actor's loss (the
            interpolated policy gradient, :mod:`~onnxprune.search.ppo_critic`); 0 is plain PPO.
        critic_hidden: Width of the plan critic's per-group MLP.
        critic_lr: Adam step size of the plan critic.
        critic_steps: Full-batch critic steps on the replay before each PPO update.
        critic_start: Episodes in the replay before the critic term acts.
        replay_size: Newest episodes the plan critic is fitted on.
        level_penalty: Weight of ``(requested level / stored level - 1)^2`` in the critic term.
    """

    steps: int = 1
    step_tol: float = 0.05
    episodes_per_update: int = 4
    update_epochs: int = 10
    minibatches: int = 1
    learning_rate: float = 3e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    norm_adv: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    hidden: int = 64
    layers: int = 2
    init_std: float = 0.25
    torch_threads: int = 1
    mirrored: bool = True
    detach_critic: bool = True
    rank_rewards: bool = False
    critic_weight: float = 0.3
    critic_hidden: int = 64
    critic_lr: float = 3e-3
    critic_steps: int = 200
    critic_start: int = 8
    replay_size: int = 2000
    level_penalty: float = 0.01

    def __post_init__(self) -> None:
        for name in ("steps", "episodes_per_update", "update_epochs", "minibatches", "hidden", "layers",
                     "torch_threads", "critic_hidden", "replay_size"):
            if int(getattr(self, name)) < 1:
                raise PlanError(f"PPO {name}={getattr(self, name)}: give 1 or more")
        for name in ("critic_weight", "critic_lr", "critic_steps", "critic_start", "level_penalty"):
            if float(getattr(self, name)) < 0:
                raise PlanError(f"PPO {name}={getattr(self, name)}: give 0 or more")


#: Fields of :class:`PPOConfig` that shape the network (taken from a loaded agent).
NETWORK_FIELDS: tuple[str, ...] = ("hidden", "layers")
