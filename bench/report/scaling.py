"""Scaling efficiency across world sizes (`--world-sizes 1,2,4`).

Runs that differ only in the number of processes (same method, dataset, preset, precision,
strategy, image size and per-process batch) form a scaling series. Efficiency at world size w is
the per-process training throughput relative to the smallest world size of the series:
`(sps_w / w) / (sps_w0 / w0)`; 1.0 is perfect weak scaling.
"""

from __future__ import annotations

import pandas as pd

SERIES_KEYS = ["method_label", "dataset", "preset", "precision", "strategy", "img_size", "per_process_batch"]
SCALING_COLUMNS = SERIES_KEYS + ["world_size", "n_runs", "train_sps_median", "sps_per_process", "speedup",
                                 "efficiency"]


def scaling_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (series, world size) for series measured at two or more world sizes."""
    ok = runs[(runs["status"] == "ok") & runs["train_samples_per_sec"].notna() & runs["world_size"].notna()].copy()
    if ok.empty:
        return pd.DataFrame(columns=SCALING_COLUMNS)
    ok["per_process_batch"] = ok["global_batch"] / ok["world_size"]
    rows = []
    for keys, series in ok.groupby(SERIES_KEYS, sort=True, dropna=False):
        sizes = series.groupby("world_size")["train_samples_per_sec"].agg(["median", "count"]).sort_index()
        if len(sizes) < 2:
            continue
        base_w = sizes.index[0]
        base = sizes["median"].iloc[0] / base_w
        for world, stats in sizes.iterrows():
            per_process = stats["median"] / world
            rows.append({**dict(zip(SERIES_KEYS, keys)), "world_size": int(world), "n_runs": int(stats["count"]),
                         "train_sps_median": stats["median"], "sps_per_process": per_process,
                         "speedup": stats["median"] / sizes["median"].iloc[0],
                         "efficiency": per_process / base})
    return pd.DataFrame(rows, columns=SCALING_COLUMNS)
