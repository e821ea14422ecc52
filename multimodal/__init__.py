"""Multimodal content model: frozen encoders, token cache, Fusion-Q-Former, LoRA sequence path.

Modules (see docs/multimodal.md):

- ``encoders``: frozen vision towers (CLIP / SigLIP / ViT) and text encoders (BERT / MiniLM)
  by hub id, local path or the offline ``tiny`` preset;
- ``preprocess``: PIL image loading, token pooling, the tiny tokenizer;
- ``precomputed``: per-item vectors from ``.npy`` / Parquet files;
- ``modality`` / ``fingerprint`` / ``token_cache``: encoding every item once into an fp16,
  memory-mapped cache that refuses to be used when stale;
- ``tokens``: the ``TokenTensors`` layout every model reads;
- ``qformer``: the Fusion-Q-Former (self-attention and BLIP-2 cross-attention variants);
- ``lora_sequence``: peft LoRA injection and the base/adapter routing helpers;
- ``content``: ``ItemContentEncoder``, target and history content embeddings of a batch;
- ``testing``: helpers of tests and benchmarks (counting Q-Former item passes); the toolkit
  never imports it.

This package imports ``data`` only (never ``ranking`` or ``recsys``).
"""
