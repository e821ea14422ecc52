"""The FuxiCTR side of ``benchmarks/peers.py``: runs inside ``.venv-peers`` (FuxiCTR from PyPI).

One model per process. It does what FuxiCTR's own ``run_expid.py`` scripts do, on the files
that ``peers.py`` exported from our prepared split: ``FeatureProcessor`` + ``build_dataset``
(with ``rebuild_dataset=False``: the ids are already integers) write ``feature_map.json``, the
model is built from it, ``RankDataLoader`` feeds it, ``model.fit`` trains with FuxiCTR's own
loop (validation AUC every epoch, early stopping, best weights restored), and the validation
and test splits are scored with ``model.predict``.

- DIN: the wheel's ``model_zoo.LongCTR.DIN`` with the ``LongCTRDataLoader`` (history = the
  first ``seq_len`` items of the user's ``full_item_seq``, last ``max_len`` kept).
- DNN, DeepFM: ``model_zoo/{DNN,DeepFM}/*_torch/src`` of the reczoo/FuxiCTR repository, from
  the hash-checked copy that ``benchmarks/peers_model_zoo.py`` unpacked (the job names the
  folder), imported unchanged; FuxiCTR's ``NpzDataLoader`` feeds them flat rows. Their own
  ``run_expid.py`` still calls ``RankDataLoader(...).make_iterator()``, which the 2.3.10
  loaders no longer have, so its steps are done here instead, as for DIN.

Measured here, the same way ``peers.py`` measures our model: training samples/s of every epoch
(the epoch's wall time minus its validation), and the process's peak RSS at the end.

Usage: ``python peers_fuxictr_worker.py JOB.json`` — JOB names the data directory, the model
parameters and where to write the result JSON and the validation and test predictions (one
probability per row, in the exported order).
"""

import json
import logging
import os
import resource
import sys
import time


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _integer_index_collator(module):
    """FuxiCTR's LongCTR ``BatchCollator``, with the index columns cast back to integers.

    Why: its ``ParquetDataset`` stacks every column into one numpy array, so with a numeric
    (float) feature such as ``prior_logit`` the integer columns arrive as float64 too, and the
    collator's numpy indexing by ``user_index`` / ``item_index`` fails. The values are exact in
    float64 (far below 2**53); everything else is FuxiCTR's own ``__call__``.
    """
    import numpy as np
    import torch

    class BatchCollator(module.BatchCollator):
        def __call__(self, batch):
            batch_tensor = module.default_collate(batch)
            all_cols = set(list(self.feature_map.features.keys()) + self.feature_map.labels)
            batch_dict = {col: batch_tensor[:, idx] for col, idx in self.column_index.items()
                          if col in all_cols}
            user_seqs = self.user_info[batch_dict["user_index"].long().numpy()]
            seq_lens = batch_dict["seq_len"].int().numpy()
            batch_seqs = self.padding_seqs(user_seqs, seq_lens)
            mask = (torch.from_numpy(batch_seqs) > 0).float()
            item_index = batch_dict["item_index"].long().numpy().reshape(-1, 1)
            batch_items = np.hstack([batch_seqs, item_index]).flatten()
            item_info = self.item_info.iloc[batch_items]
            item_dict = {col: torch.from_numpy(np.array(item_info[col].to_list()))
                         for col in item_info.columns if col in all_cols}
            return batch_dict, item_dict, mask

    return BatchCollator


def _load_package(path, name):
    """Imports the model_zoo package folder ``path`` (its ``__init__.py`` and modules, as they
    are) under the module name ``name``: both upstream packages are called ``src``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        name, os.path.join(path, "__init__.py"), submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _model_class(job):
    """(model class, description): DIN from the wheel's ``model_zoo.LongCTR``; DNN and DeepFM
    from the checked model_zoo copy whose package folder the job names."""
    model = job["params"]["model"]
    if model == "DIN":
        from model_zoo.LongCTR.DIN import DIN

        return DIN, "model_zoo.LongCTR.DIN (fuxictr wheel)"
    package = _load_package(job["model_package"], f"fuxictr_model_zoo_{model}")
    return getattr(package, model), job["model_source"]


def _loaders(feature_map, params, stage):
    """``RankDataLoader`` for ``stage`` ("train": (train, valid); "test": test): LongCTR's
    loader for DIN (history rebuilt per batch), FuxiCTR's ``NpzDataLoader`` (what it picks for
    ``data_format="npz"``) for the flat models."""
    from fuxictr.pytorch.dataloaders import RankDataLoader

    if params["model"] == "DIN":
        from model_zoo.LongCTR import longctr_dataloader
        from model_zoo.LongCTR.longctr_dataloader import LongCTRDataLoader

        params["data_loader"] = LongCTRDataLoader
        longctr_dataloader.BatchCollator = _integer_index_collator(longctr_dataloader)
    return RankDataLoader(feature_map, stage=stage, **params)


def _data_params(job):
    """Where FuxiCTR reads each split: LongCTR parquet + user/item tables for DIN, npz rows
    for DNN/DeepFM."""
    d = job["data_dir"]
    if job["params"]["model"] == "DIN":
        return dict(data_format="parquet", **{f"{s}_data": os.path.join(d, f"{s}.parquet")
                                              for s in ("train", "valid", "test")},
                    user_info=os.path.join(d, "user_info.parquet"),
                    item_info=os.path.join(d, "item_info.parquet"))
    return dict(data_format="npz", **{f"{s}_data": os.path.join(d, f"{s}.npz")
                                      for s in ("train", "valid", "test")})


def main(job_path: str) -> None:
    with open(job_path) as fh:
        job = json.load(fh)
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(job["threads"])
    import fuxictr
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.torch_utils import seed_everything

    logging.basicConfig(level=logging.WARNING)
    params = dict(job["params"])
    params.update(
        dataset_id=job["dataset_id"], data_root=job["data_root"], **_data_params(job),
        feature_cols=job["feature_cols"], label_col=job["label_col"],
        rebuild_dataset=False, gpu=-1, verbose=0,
    )
    seed_everything(seed=params["seed"])
    started = time.perf_counter()
    feature_encoder = FeatureProcessor(**params)
    params["train_data"], params["valid_data"], params["test_data"] = \
        build_dataset(feature_encoder, **params)
    feature_map = FeatureMap(params["dataset_id"], feature_encoder.data_dir)
    feature_map.load(os.path.join(feature_encoder.data_dir, "feature_map.json"), params)
    model_class, described = _model_class(job)
    model = model_class(feature_map, **params)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    os.makedirs(model.model_dir, exist_ok=True)  # run_expid gets it from set_logger
    train_gen, valid_gen = _loaders(feature_map, params, "train")

    # Time every epoch and every validation inside FuxiCTR's own fit(): train rate of an epoch
    # = its samples / (epoch wall time - its validation wall time).
    epochs: list[dict] = []
    train_epoch, eval_step = model.train_epoch, model.eval_step

    def timed_eval_step():
        t0 = time.perf_counter()
        eval_step()
        epochs[-1]["eval_s"] += time.perf_counter() - t0

    def timed_train_epoch(gen):
        epochs.append({"eval_s": 0.0})
        t0 = time.perf_counter()
        train_epoch(gen)
        wall = time.perf_counter() - t0
        train_s = wall - epochs[-1]["eval_s"]
        epochs[-1].update(wall_s=wall, train_s=train_s,
                          samples_per_s=gen.num_samples / max(train_s, 1e-9))

    evaluate = model.evaluate

    def recorded_evaluate(gen, metrics=None):
        logs = evaluate(gen, metrics=metrics)
        if epochs and gen is valid_gen:
            epochs[-1]["valid"] = {k: float(v) for k, v in logs.items()}
        return logs

    model.train_epoch, model.eval_step = timed_train_epoch, timed_eval_step
    model.evaluate = recorded_evaluate
    fit_start = time.perf_counter()
    model.fit(train_gen, validation_data=valid_gen, **params)  # restores the best weights
    fit_s = time.perf_counter() - fit_start

    # Validation scores of the restored model: peers.py picks the best FuxiCTR model on them.
    valid_probs = model.predict(valid_gen)
    test_gen = _loaders(feature_map, params, "test")  # loaded after training, as before
    probs = model.predict(test_gen)
    test_logs = evaluate(test_gen)
    for path, p in ((job["predictions"], probs), (job["valid_predictions"], valid_probs)):
        pd.DataFrame({"prob": np.asarray(p, dtype=np.float64)}).to_parquet(path)
    result = {
        "fuxictr_version": fuxictr.__version__,
        "torch_version": torch.__version__,
        "model": described,
        "parameters": int(n_params),
        "train_rows": int(train_gen.num_samples),
        "test_rows": int(len(probs)),
        "epochs": epochs,
        "fit_s": fit_s,
        "total_s": time.perf_counter() - started,
        "fuxictr_test_metrics": {k: float(v) for k, v in test_logs.items()},
        "peak_rss_mb": _peak_rss_mb(resource.RUSAGE_SELF),
        # Children: DataLoader workers when num_workers > 0. With 0 it still reads ~450 MB,
        # an artefact: `platform.processor()` forks `uname -p` while importing fuxictr, and a
        # forked child's max RSS counts the parent's pages it shares copy-on-write.
        "peak_rss_children_mb": _peak_rss_mb(resource.RUSAGE_CHILDREN),
    }
    with open(job["result"], "w") as fh:
        json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
