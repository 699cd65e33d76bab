"""What the four aggregations share: the finished arms with their per-item scores, read once, checked against the
evaluation items every arm answers, and grouped by the parameters that make an arm; runs paired on (zoo build,
seed); and what an aggregation writes (`Outputs`: titled tables, the verdict and its headline)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from medlib import fileio
from medlib.provenance import git_state
from medlib.runs import scored_arms
from medlib.tables import write_table


def run_unit(arm: dict) -> tuple[int, int]:
    """A run: (zoo build, seed); the units a claim's intervals resample and its parts pair."""
    return int(arm["params"].get("zoo_seed", 0)), int(arm["params"]["seed"])


def pair_runs(a_arms: list[dict], b_arms: list[dict] | None, what: str,
              one_per_build: bool = False) -> tuple[list[dict], list[dict], np.ndarray]:
    """(a's runs, b's runs, their zoo builds), matched on the (zoo build, seed) runs both have; `b_arms` None: a's
    own runs (a system compared with its own controls). `one_per_build`: b has one run per build that stands for
    every seed of it (an arm that trains nothing and decodes greedily), so each of a's runs meets its build's."""
    a = {run_unit(x): x for x in a_arms}
    if b_arms is None:
        b = a
    elif one_per_build:
        b = {u: x for u in a for x in b_arms if run_unit(x)[0] == u[0]}
    else:
        b = {run_unit(x): x for x in b_arms}
    units = sorted(set(a) & set(b))
    if not units:
        raise ValueError(f"{what} share no (zoo build, seed) run to pair")
    return [a[u] for u in units], [b[u] for u in units], np.array([u[0] for u in units])


class ScoredArms:
    """The finished arms of `experiment` that kept per-item scores, grouped by `key(arm)` (in seed order), with
    each arm's `per_sample` rows per split, checked against `evaluation_items` before anything is computed."""

    splits = ("val", "test")
    # Where one arm scores several systems on the same items (the model, its image-shuffled self, baselines), its
    # rows carry a `condition` column and `rows[dir]` is keyed by (split, condition), each checked on its own.
    conditions = False
    dtypes: dict = {}

    def __init__(self, run_dirs: list[Path], experiment: str, key, keep=None):
        """`keep(arm)`: only these arms (all by default); `key(arm)`: the group an arm belongs to."""
        arms, items = scored_arms(run_dirs, experiment)
        self.arms = [a for a in arms if keep is None or keep(a)]
        self.items = {split: items[items.split == split].reset_index(drop=True) for split in self.splits}
        self.rows = {}
        for a in self.arms:
            rows = pd.read_csv(a["dir"] / "per_sample.csv.gz", keep_default_na=False, na_values=[""], dtype=self.dtypes)
            split_of = (lambda k: k[0]) if self.conditions else (lambda k: k)
            got = {k: part.reset_index(drop=True)
                   for k, part in rows.groupby(["split", "condition"] if self.conditions else "split", sort=False)
                   if split_of(k) in self.splits}
            # every split must be there; with conditions, each condition an arm wrote must cover its split
            for k in (list(got) if self.conditions else self.splits):
                part = got.setdefault(k, rows.iloc[:0])
                if len(part) != len(self.items[split_of(k)]):
                    raise ValueError(f"{a['dir']}: {len(part)} {' '.join(k) if self.conditions else k} scores, but the "
                                     f"evaluation items list {len(self.items[split_of(k)])}; re-run it")
            self.rows[a["dir"]] = got
        self.groups: dict[tuple, list[dict]] = {}
        for a in sorted(self.arms, key=run_unit):
            self.groups.setdefault(key(a), []).append(a)


def provenance_line(runs: list[dict]) -> str:
    """Which code commit(s) the runs were computed at, and the commit the aggregation runs at."""
    commits = Counter(str((a.get("git") or {}).get("commit"))[:12] for a in runs)
    dirty = sum(bool((a.get("git") or {}).get("dirty")) for a in runs)
    now = git_state()
    ran = ", ".join(f"`{c}` ({n})" for c, n in commits.most_common()) or "none"
    return (f"Runs at commit {ran}{f', {dirty} with uncommitted changes' if dirty else ''}; aggregated at "
            f"`{str(now.get('commit'))[:12]}`{' with uncommitted changes' if now.get('dirty') else ''}.")


class Outputs:
    """What an aggregation writes into `out_dir`: each table as CSV and titled Markdown (`table`), then the verdict
    (`verdict.md`) and the front table's line of it (`headline.json`), both computed before either is written."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def table(self, name: str, frame: pd.DataFrame, title: str):
        return write_table(self.out_dir, name, frame, title)

    def verdict(self, text: str, headline: dict | None = None) -> None:
        fileio.write_text(self.out_dir / "verdict.md", text)
        if headline is not None:  # notebook 04's line of the front table is computed from its comparison.json
            fileio.write_text(self.out_dir / "headline.json", json.dumps(headline, indent=1) + "\n")
