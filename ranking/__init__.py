"""TorchRec ranking model: ID tables, DIN attention, DCNv2/DLRM interaction, multi-task heads,
sharding (planner + DistributedModelParallel) and distributed checkpoints.

Modules: ``config`` (RankingConfig), ``tables`` (table configs from a FeatureLayout),
``archs`` (SparseArch, DINAttention, DCN/DLRM interactions, OverArch, TaskHeads), ``model``
(RankingModel, RankingOutput), ``loss``, ``optim`` (fused sparse + dense optimizers),
``dist`` (process group from env), ``sharding`` (shard_model, plan), ``checkpoint`` (DCP).
``testing`` holds the helpers of tests and benchmarks (toy batches, train_step / predict,
dense-tower switches); the toolkit never imports it.
Imports ``data`` only; see docs/ranking.md.
"""
