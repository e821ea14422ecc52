"""A checkpoint someone else produced runs no code (docs/threat_model.md).

A malicious pickle (its payload creates a marker file) is planted in each place a checkpoint
could carry one: the old-format ``extra_state.pt``, ``extra_tensors.pt``, DCP's ``.metadata``
and a non-tensor DCP entry. ``load_checkpoint``, ``recsys evaluate``, ``recsys train --resume``
and a checkpoint downloaded from the model registry all refuse it, and the marker never
appears. The extra state itself is JSON and tensors; old-format runs convert only on request.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

from ranking.checkpoint import (
    EXTRA_FILE,
    LEGACY_EXTRA_FILE,
    TENSORS_FILE,
    CheckpointLoadError,
    UnsafeCheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ranking.checkpoint_convert import main as convert_main
from ranking.config import RankingConfig
from ranking.model import RankingModel
from ranking.optim import make_optimizers
from ranking.sharding import shard_model
from ranking.testing.train import train_step
from recsys.cli import main as recsys_main
from tests.ranking.fixtures import toy_world


class Payload:
    """Unpickling this writes ``marker``: a stand-in for a planted shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def torch_payload(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    return buf.getvalue()


def plant(checkpoint: Path, where: str, marker: Path) -> None:
    """Replaces one file of ``checkpoint`` (or one DCP entry) by a pickle running ``Payload``."""
    if where == "legacy_extra":  # what the earlier format (or an attacker) puts there
        (checkpoint / EXTRA_FILE).unlink()
        (checkpoint / TENSORS_FILE).unlink(missing_ok=True)
        (checkpoint / LEGACY_EXTRA_FILE).write_bytes(torch_payload(marker))
    elif where == "extra_tensors":
        (checkpoint / TENSORS_FILE).write_bytes(torch_payload(marker))
    elif where == "metadata":
        (checkpoint / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    elif where == "dcp_entry":
        # A weight re-declared as a non-tensor entry, which DCP would torch.load unrestricted.
        metadata = pickle.loads((checkpoint / ".metadata").read_bytes())  # our own file
        fqn = next(k for k in metadata.state_dict_metadata if k.startswith("model."))
        blob = torch_payload(marker)
        (checkpoint / "__9_0.distcp").write_bytes(blob)
        metadata.state_dict_metadata[fqn] = BytesStorageMetadata()
        metadata.storage_data[MetadataIndex(fqn)] = _StorageInfo("__9_0.distcp", 0, len(blob))
        (checkpoint / ".metadata").write_bytes(pickle.dumps(metadata))
    else:
        raise ValueError(where)


PLACES = ["legacy_extra", "extra_tensors", "metadata", "dcp_entry"]


def small_model(env, steps: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A sharded toy ranking model and its optimizer, trained ``steps`` steps (a saved
    optimizer needs its lazy state, which the first step creates)."""
    cfg = RankingConfig(embedding_dim=8, attention_hidden=(8,), over_arch=(8,))
    model = shard_model(RankingModel(toy_world().layout, cfg, device="meta"), cfg, env,
                        print_plan=False)
    optimizer = make_optimizers(model, cfg)
    for batch in toy_world().batches(32, 32, seed=1)[:steps]:
        train_step(model, optimizer, batch)
    return model, optimizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory, world_of_one) -> Path:
    """A checkpoint with an optimizer and a tensor in its extra state."""
    model, optimizer = small_model(world_of_one, steps=1)
    root = tmp_path_factory.mktemp("saved")
    return save_checkpoint(root, model, optimizer, {"rng": torch.get_rng_state(), "epoch": 1}, step=5)


def test_extra_state_is_json_and_tensors(tmp_path, world_of_one):
    model, optimizer = small_model(world_of_one, steps=1)
    rng = torch.get_rng_state()
    extra = {"position": (3, 4), "rng": rng, "history": [{"loss": 0.5, "auc": None}],
             "nested": {"t": torch.arange(3), "name": "x", "flag": True, "nan": float("nan")}}
    path = save_checkpoint(tmp_path, model, optimizer, extra, step=7)
    assert not (path / LEGACY_EXTRA_FILE).exists()
    on_disk = json.loads((path / EXTRA_FILE).read_text())
    assert on_disk["position"] == [3, 4] and on_disk["rng"] == {"__tensor__": "0"}
    back = load_checkpoint(path, model, optimizer)
    assert back["position"] == [3, 4] and back["step"] == 7  # tuples come back as lists
    assert torch.equal(back["rng"], rng) and torch.equal(back["nested"]["t"], torch.arange(3))
    assert back["history"] == [{"loss": 0.5, "auc": None}] and np.isnan(back["nested"]["nan"])
    # What JSON and tensors cannot hold is refused before anything is written.
    with pytest.raises(TypeError, match=r"extra_state\.numpy: a ndarray is not saved"):
        save_checkpoint(tmp_path, model, optimizer, {"numpy": np.zeros(3)}, step=8)
    assert latest_checkpoint(tmp_path) == path


def test_the_planted_payload_is_live(tmp_path):
    """Control: unpickled the ordinary way, the payload does run. Every refusal below is
    therefore the checkpoint code's doing, not a dud payload."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("where", PLACES)
def test_load_checkpoint_refuses_a_planted_pickle(tmp_path, saved, world_of_one, where):
    checkpoint = tmp_path / saved.name
    shutil.copytree(saved, checkpoint)
    marker = tmp_path / "marker"
    plant(checkpoint, where, marker)
    model, optimizer = small_model(world_of_one)
    with pytest.raises(UnsafeCheckpointError, match="refused") as info:
        load_checkpoint(checkpoint, model, optimizer)
    assert not marker.exists()
    if where == "legacy_extra":
        assert f"python -m ranking.checkpoint_convert {tmp_path}" in str(info.value)


def test_a_storage_entry_naming_another_file_is_refused(tmp_path, saved, world_of_one):
    checkpoint = tmp_path / saved.name
    shutil.copytree(saved, checkpoint)
    metadata = pickle.loads((checkpoint / ".metadata").read_bytes())
    index = next(iter(metadata.storage_data))
    info = metadata.storage_data[index]
    metadata.storage_data[index] = _StorageInfo("../elsewhere.distcp", info.offset, info.length)
    (checkpoint / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(UnsafeCheckpointError, match="not a file of this checkpoint folder"):
        load_checkpoint(checkpoint, small_model(world_of_one)[0])


def test_malformed_checkpoint_files_are_load_errors(tmp_path, saved, world_of_one):
    for name, content in [(".metadata", b"\x80\x05garbage"), (EXTRA_FILE, b"{not json"),
                          ("meta.json", b"[]"), (TENSORS_FILE, b"PK\x03\x04broken")]:
        checkpoint = tmp_path / name.strip(".")
        shutil.copytree(saved, checkpoint)
        (checkpoint / name).write_bytes(content)
        with pytest.raises(CheckpointLoadError, match=name.replace(".", r"\.")):
            load_checkpoint(checkpoint, small_model(world_of_one)[0])


def test_old_format_converts_on_request_and_resumes_the_same_rng(tmp_path, saved, world_of_one):
    """The earlier format (RNG states as Python tuples and a numpy array, pickled) is refused
    until converted; the converted state restores every RNG exactly."""
    from recsys.training.train import _set_rng_state

    checkpoint = tmp_path / "run" / "checkpoints" / saved.name
    shutil.copytree(saved, checkpoint)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    old_rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    want = (random.random(), np.random.rand(), torch.rand(1))  # what the saved states draw next
    torch.save({"state": {"epoch": 2, "history": []}, "rng": old_rng}, checkpoint / LEGACY_EXTRA_FILE)
    (checkpoint / EXTRA_FILE).unlink()
    (checkpoint / TENSORS_FILE).unlink()
    model, optimizer = small_model(world_of_one)
    with pytest.raises(UnsafeCheckpointError, match="ranking.checkpoint_convert"):
        load_checkpoint(checkpoint, model, optimizer)

    assert convert_main([str(tmp_path / "run")]) == 0
    assert not (checkpoint / LEGACY_EXTRA_FILE).exists()
    extra = load_checkpoint(checkpoint, model, optimizer)
    assert extra["state"] == {"epoch": 2, "history": []}
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    _set_rng_state(extra["rng"])
    assert (random.random(), np.random.rand()) == want[:2] and torch.equal(torch.rand(1), want[2])


def test_the_converter_refuses_a_malicious_old_file(tmp_path, saved, capsys):
    checkpoint = tmp_path / saved.name
    shutil.copytree(saved, checkpoint)
    marker = tmp_path / "marker"
    plant(checkpoint, "legacy_extra", marker)
    assert convert_main([str(tmp_path)]) == 2
    assert "not converted" in capsys.readouterr().err
    assert not marker.exists() and (checkpoint / LEGACY_EXTRA_FILE).exists()


# ---- through the CLI, on a trained run ---------------------------------------------------

TRAIN_SETTINGS = ["data.max_history=5", "data.tail_days=7", "ranking.embedding_dim=4",
                  "ranking.attention_hidden=[8]", "ranking.over_arch=[8]", "train.epochs=1",
                  "train.batch_size=128", "train.threads=1", "train.compile=off",
                  "train.checkpoint_every=4"]


def train_args(world: Path, out: Path) -> list[str]:
    args = ["train", "id_only", "--data", str(world), "--out", str(out), "--quiet", "--no-track"]
    for setting in TRAIN_SETTINGS:
        args += ["--set", setting]
    return args


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, finished run) of a seconds-long id_only training."""
    from data.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("trained")
    world = synthesize(root / "world", SynthConfig(n_users=80, n_items=60, n_days=30, seed=3))
    assert recsys_main(train_args(world, root / "run")) == 0
    return world, root / "run"


def _cli(capsys, args: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    status = recsys_main(args)
    return status, capsys.readouterr().err


@pytest.mark.parametrize("where", ["legacy_extra", "extra_tensors", "metadata", "dcp_entry"])
def test_evaluate_refuses_a_planted_checkpoint(tmp_path, trained, capsys, where):
    world, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    marker = tmp_path / "marker"
    plant(latest_checkpoint(copy / "checkpoints" / "best"), where, marker)
    status, err = _cli(capsys, ["evaluate", "--run", str(copy), "--data", str(world),
                                "--no-track", "--quiet"])
    assert status == 2 and "refused" in err and len(err.splitlines()) == 1, err
    assert not marker.exists()
    assert not (copy / "eval-test").exists()


@pytest.mark.parametrize("where", ["legacy_extra", "extra_tensors", "metadata"])
def test_resume_refuses_a_planted_checkpoint(tmp_path, trained, capsys, where):
    from recsys.runs import rundir

    world, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rundir.update_meta(copy, status="failed")  # as a killed run leaves it
    marker = tmp_path / "marker"
    plant(latest_checkpoint(copy / "checkpoints"), where, marker)
    status, err = _cli(capsys, [*train_args(world, copy), "--resume"])
    assert status == 2 and "refused" in err and len(err.splitlines()) == 1, err
    assert not marker.exists()


def test_a_registry_checkpoint_is_loaded_through_the_same_refusal(tmp_path, tmp_path_factory,
                                                                   trained, capsys):
    """A registered model version's checkpoints, replaced in the tracking store and downloaded
    the way a colleague would, are refused by ``recsys evaluate``."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from recsys.runs.tracking import track_run
    from tests.recsys.run_fixtures import fresh_store

    world, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    store = fresh_store(tmp_path, tmp_path_factory.getbasetemp())
    result = track_run(copy, store, model_name="ctr")
    client = MlflowClient(store)
    version = client.get_model_version("ctr", result.model_version)
    checkpoints = f"{client.get_run(version.run_id).info.artifact_uri}/checkpoints"
    # The attacker's move: the checkpoint in the store is replaced (the local run stays clean).
    marker = tmp_path / "marker"
    plant(latest_checkpoint(Path(unquote(urlparse(checkpoints).path)) / "best"), "metadata", marker)
    # The colleague downloads the version's checkpoints into a run directory and evaluates.
    received = tmp_path / "received"
    shutil.copytree(copy, received, ignore=shutil.ignore_patterns("checkpoints"))
    download_artifacts(artifact_uri=checkpoints, dst_path=str(received))
    status, err = _cli(capsys, ["evaluate", "--run", str(received), "--data", str(world),
                                "--no-track", "--quiet"])
    assert status == 2 and "refused" in err, err
    assert not marker.exists()
