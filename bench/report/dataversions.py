"""Data versions: records of one setting made from different split lists never share a row.

A setting (`setting_id`) is everything but the seed and the data; the split lists a record was
trained and tested on are its `data.split_hashes`. Each distinct set of hashes is a *data
version* (a short hash of them). Records that carry no hashes (a cell that failed before reading
its data) take their setting's version when it has exactly one. A setting with several versions
is split: its rows get `setting_id@version`, so every table, comparison and plot keeps them apart,
and `mixed_data_warnings` says so.
"""

from __future__ import annotations

import hashlib

import pandas as pd


def data_version(split_hashes: object) -> str | None:
    """A short, stable name for one set of split hashes (the runs frame's `split_hashes` string)."""
    if not isinstance(split_hashes, str) or not split_hashes:
        return None
    return hashlib.sha256(split_hashes.encode()).hexdigest()[:8]


def assign_data_versions(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with a `data_version` column, and settings made from several versions split apart."""
    runs = runs.copy()
    runs["data_version"] = [data_version(v) for v in runs["split_hashes"]]
    for (_, _), index in runs.groupby(["dataset", "setting_id"], dropna=True, sort=False).groups.items():
        versions = sorted({v for v in runs.loc[index, "data_version"] if isinstance(v, str)})
        if len(versions) == 1:
            runs.loc[index, "data_version"] = versions[0]
        elif len(versions) > 1:
            known = [i for i in index if isinstance(runs.at[i, "data_version"], str)]
            runs.loc[known, "setting_id"] = [f"{runs.at[i, 'setting_id']}@{runs.at[i, 'data_version']}" for i in known]
    return runs


def mixed_data_warnings(runs: pd.DataFrame) -> list[str]:
    """One line per setting whose records were made from more than one version of its dataset."""
    lines = []
    if "data_version" not in runs:
        runs = assign_data_versions(runs)
    split = runs[runs["setting_id"].astype(str).str.contains("@", regex=False)]
    base = split["setting_id"].astype(str).str.split("@").str[0]
    for (dataset, label, sid), part in split.groupby([split["dataset"], split["method_label"], base], sort=True):
        versions = sorted(set(part["data_version"]))
        lines.append(f"fgbench: warning: {label} on {dataset} (setting {sid}) has records made from "
                     f"{len(versions)} different split lists ({', '.join(versions)}); they are kept apart as "
                     f"separate rows (column data_version)")
    return lines
