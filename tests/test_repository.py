"""The repository stays small enough to clone and to carry: limits on what is tracked, and no
reference to anything outside it."""

import subprocess

import pytest

from medlib.paths import REPO_ROOT


def _tracked() -> list:
    done = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    return [REPO_ROOT / p for p in done.stdout.decode().split("\0") if p and (REPO_ROOT / p).is_file()]


def test_no_tracked_file_under_results_passes_1_mib():
    big = [str(p.relative_to(REPO_ROOT)) for p in _tracked()
           if p.relative_to(REPO_ROOT).parts[0] == "results" and p.stat().st_size > 2**20]
    assert not big, f"over 1 MiB under results/: {big}"


def test_the_tracked_tree_stays_under_40_mib_with_the_shipped_zoo():
    total = sum(p.stat().st_size for p in _tracked())
    assert total <= 40 * 2**20, f"tracked tree is {total / 2**20:.1f} MiB"


def test_the_readme_is_a_front_door_whose_links_all_resolve():
    import re

    readme = REPO_ROOT / "README.md"
    assert readme.stat().st_size <= 10 * 1024, f"README.md is {readme.stat().st_size / 1024:.1f} KB"
    text = readme.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links, "the README links into docs/"
    assert [link for link in links if not (REPO_ROOT / link).exists()] == []
    for page in (REPO_ROOT / "docs").glob("*.md"):  # and each docs page's own links
        for link in re.findall(r"\]\(([^)#:]+)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / link).exists(), f"{page.name}: {link}"


def test_each_notebook_opens_with_links_to_its_executed_copy_that_resolve():
    import json
    import re

    for nb in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        opening = "".join(json.loads(nb.read_text(encoding="utf-8"))["cells"][0]["source"])
        links = re.findall(r"\]\(([^)#:]+)\)", opening)
        assert any(link.endswith("default/notebook.ipynb") for link in links), nb.name
        assert [link for link in links if not (nb.parent / link).exists()] == [], nb.name


def test_nothing_points_outside_the_repository():
    sibling = "../" + "shared"  # a folder beside the checkout, which a user's clone does not have
    outside = [str(p.relative_to(REPO_ROOT)) for p in _tracked()
               if p.suffix in (".py", ".md", ".ipynb", ".toml", ".yml", ".txt")
               and sibling in p.read_text(encoding="utf-8", errors="replace")]
    assert not outside, f"these files cite a path a clone does not have: {outside}"


def test_reproduce_would_rerun_no_committed_arm():
    """Every arm of every sweep `medlib reproduce` runs is already finished in results/ with the same
    (resolved) parameters, so a reproduction on a fresh clone re-runs nothing and changes no number."""
    from medlib.experiments import EXPERIMENTS
    from medlib.orchestrate import RESULTS, check_arm, expand_grid, finished_runs, run_dir_for
    from medlib.runs import is_finished

    missing = []
    for name, spec in EXPERIMENTS.items():
        for grid in spec.sweeps:
            grid = spec.resolve(grid, finished_runs(name, "tiny"))
            for arm in expand_grid(grid) or [{}]:
                full = check_arm(name, arm, origin=name)
                if not is_finished(run_dir_for(name, full, RESULTS), full, spec.resolved):
                    missing.append((name, arm))
    assert not missing, f"arms reproduce would run again: {missing}"
