"""TorchRec ranking model: ID tables, DIN attention, DCNv2/DLRM interaction, multi-task heads,
sharding (planner + DistributedModelParallel) and distributed checkpoints.

Modules: ``config`` (RankingConfig), ``tables`` (table configs from a FeatureLayout),
``archs`` (SparseArch, DINAttention, DCN/DLRM interactions, OverArch, TaskHeads), ``model``
(RankingModel, RankingOutput), ``loss``, ``optim`` (fused sparse + dense optimizers),
``dist`` (process group from env), ``sharding`` (shard_model, plan), ``checkpoint`` (DCP),
``train`` (train_step, predict), ``toy_data`` (random / planted-signal batches).
Imports ``data`` only; see docs/ranking.md.
"""
