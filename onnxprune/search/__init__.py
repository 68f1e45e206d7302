"""Search stage: per-group pruning ratios that meet a resource target with the best accuracy.

Public face: :class:`~onnxprune.search.space.SearchSpace` (actions -> keep counts -> plan and exact
cost), :func:`~onnxprune.search.rescale.rescale` (AGMC Algorithm 1), the rewards in
:mod:`onnxprune.search.reward`, :class:`~onnxprune.search.env.CompressionEnv` and the agents in
:mod:`onnxprune.search.baselines`. The stage never writes files and never imports the rewrite
or evaluate stages' callers: candidates are built and scored through callables it is given.
"""
