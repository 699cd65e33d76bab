"""What the four aggregations share: the finished arms with their per-item scores, read once, checked against the
evaluation items every arm answers, and grouped by the parameters that make an arm."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlib.runs import scored_arms


class ScoredArms:
    """The finished arms of `experiment` that kept per-item scores, grouped by `key(arm)` (in seed order), with
    each arm's `per_sample` rows per split, checked against `evaluation_items` before anything is computed."""

    splits = ("val", "test")

    def __init__(self, run_dirs: list[Path], experiment: str, key, keep=None):
        """`keep(arm)`: only these arms (all by default); `key(arm)`: the group an arm belongs to."""
        arms, items = scored_arms(run_dirs, experiment)
        self.arms = [a for a in arms if keep is None or keep(a)]
        self.items = {split: items[items.split == split].reset_index(drop=True) for split in self.splits}
        self.rows = {}
        for a in self.arms:
            rows = pd.read_csv(a["dir"] / "per_sample.csv.gz", keep_default_na=False, na_values=[""])
            self.rows[a["dir"]] = {split: rows[rows.split == split].reset_index(drop=True) for split in self.splits}
            for split, want in self.items.items():
                if len(self.rows[a["dir"]][split]) != len(want):
                    raise ValueError(f"{a['dir']}: {len(self.rows[a['dir']][split])} {split} scores, but the evaluation "
                                     f"items list {len(want)}; re-run it")
        self.groups: dict[tuple, list[dict]] = {}
        for a in sorted(self.arms, key=lambda a: a["params"]["seed"]):
            self.groups.setdefault(key(a), []).append(a)
