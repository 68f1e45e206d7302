"""The GNN-RL agent inside ``compress``: agent files on disk, resume and topology transfer.

The agent is written to ``<output>.agent.pt`` after every PPO update (a resumable checkpoint:
network, optimizer, generator and search state) and once more at the end (the trained agent,
which ``--policy`` loads to start the search on another model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxprune.errors import PlanError
from onnxprune.io import write_bytes_atomic
from onnxprune.search.baselines import OnEpisode, SearchState
from onnxprune.search.env import CompressionEnv
from onnxprune.search.ppo import AgentCheckpoint, PPOConfig, ppo_search

logger = logging.getLogger(__name__)


def agent_path(output: Path) -> Path:
    """Where the agent of the run writing ``output`` is saved (``<output>.agent.pt``)."""
    return output.with_name(output.name + ".agent.pt")


def read_agent(path: Path, option: str = "--policy") -> tuple[AgentCheckpoint, dict[str, Any]]:
    """The agent saved at ``path`` and the run settings stored with it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PlanError(f"{option} {path}: cannot read it ({exc}); pass a <out>.agent.pt from an earlier "
                        "`onnxprune compress --agent gnnrl` run") from exc
    return AgentCheckpoint.from_bytes(data, source=f"{option} {path}")


def run_gnnrl(env: CompressionEnv[Any], episodes: int, *, seed: int, output: Path, run: Mapping[str, object],
              resume: bool = False, policy: Path | None = None, config: PPOConfig | None = None,
              on_episode: OnEpisode | None = None) -> SearchState:
    """Train the GNN-RL agent on ``env``, saving it next to ``output``.

    Args:
        env: The environment.
        episodes: Total episodes.
        seed: Seed of the run.
        output: The pruned model's path; the agent goes to :func:`agent_path` of it.
        run: The run's settings (a resumed run must have the same).
        resume: Continue from the agent checkpoint of an interrupted run (from its last PPO
            update; the episodes after it are played again, identically).
        policy: An agent file trained on another model to start from (topology transfer).
        config: PPO hyperparameters.
        on_episode: Called after every episode.

    Returns:
        The final search state.
    """
    target = agent_path(output)
    previous = None
    if resume and target.exists():
        previous, extra = read_agent(target, "--resume")
        if extra.get("run") != dict(run):
            raise PlanError(f"--resume: {target} was written by a run with other settings ({extra.get('run')}); "
                            "repeat those settings or run without --resume")
    transfer = read_agent(policy)[0] if policy is not None else None

    def save(checkpoint: AgentCheckpoint) -> None:
        write_bytes_atomic(target, checkpoint.to_bytes({"run": dict(run)}))

    state, final = ppo_search(env, episodes, seed=seed, config=config, resume=previous, transfer=transfer,
                              on_episode=on_episode, on_update=save)
    save(final)
    logger.info("saved the GNN-RL agent to %s", target)
    return state
