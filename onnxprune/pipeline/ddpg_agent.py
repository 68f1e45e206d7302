"""The DDPG agents (``amc``, ``agmc``) inside ``compress``: the trained agent on disk and ``--policy``.

At the end of a search the agent's networks (:class:`~onnxprune.search.ddpg_policy.DDPGPolicy`)
are written to ``<output>.agent.pt``; ``--policy`` starts another run from such a file (topology
transfer: both states have a size that does not depend on the model). With ``--policy``,
``compress`` skips the random warm-up (0 episodes unless ``--warmup`` is given): the transferred
actor acts from the first episode, with the exploration noise starting at ``init_delta`` and
decaying as usual. The resumable state of an interrupted run lives in ``<output>.search.json``
as for the other agents (a resumed run continues its own agent, not the policy file).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from onnxprune.errors import PlanError
from onnxprune.io import write_bytes_atomic
from onnxprune.pipeline.gnnrl import agent_path
from onnxprune.search.baselines import OnEpisode, SearchState
from onnxprune.search.ddpg import DDPGConfig, ddpg_search, export_policy
from onnxprune.search.ddpg_policy import DDPGPolicy
from onnxprune.search.env import CompressionEnv
from onnxprune.search.states import make_states

logger = logging.getLogger(__name__)


def read_policy(path: Path) -> DDPGPolicy:
    """The DDPG agent saved at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PlanError(f"--policy {path}: cannot read it ({exc}); pass a <out>.agent.pt from an earlier "
                        "`onnxprune compress --agent amc` or `--agent agmc` run") from exc
    return DDPGPolicy.from_bytes(data, f"--policy {path}")


def run_ddpg(env: CompressionEnv[Any], kind: str, episodes: int, *, seed: int, output: Path, config: DDPGConfig,
             state: SearchState | None = None, policy: Path | None = None,
             on_episode: OnEpisode | None = None, pool: str = "mean") -> SearchState:
    """Run DDPG on the ``kind`` state (``amc`` or ``agmc``) and save the trained agent next to ``output``.

    Args:
        env: The environment.
        kind: ``amc`` (handcrafted state) or ``agmc`` (encoder-decoder state).
        episodes: Total episodes.
        seed: Seed of the run.
        output: The pruned model's path; the agent goes to ``<output>.agent.pt``.
        config: DDPG hyperparameters.
        state: A checkpointed search state to resume from (its agent wins over ``policy``).
        policy: A ``<out>.agent.pt`` of an earlier run of the same kind to start from.
        on_episode: Called after every episode.
        pool: ``agmc``'s graph pooling, ``mean`` or ``diffpool`` (a ``--policy`` must have the same).

    Returns:
        The final search state.
    """
    states = make_states(kind, env, seed=seed, pool=pool)
    transfer = None
    if policy is not None:
        transfer = read_policy(policy)
        transfer.check(kind, states.dim, f"--policy {policy}", pool=states.pool)
    final = ddpg_search(env, states, episodes, seed=seed, agent=kind, config=config, state=state,
                        on_episode=on_episode, policy=transfer)
    target = agent_path(output)
    write_bytes_atomic(target, export_policy(final, kind, states, env.space.max_ratio, config,
                                                    env.action_dim).to_bytes())
    logger.info("saved the %s agent to %s", kind, target)
    return final
