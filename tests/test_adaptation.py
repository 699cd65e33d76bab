"""Notebook 04: the three recipes' trainable sets on the shared backbone, their parameter checks, and the
aggregation's matched-budget verdict (synthetic arms whose ranking is known)."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch

from medlib import report
from medlib.experiments import adaptation_results as res
from medlib.models import adaptation as ad
from medlib.models import medblip
from medlib.params import ParameterError


def _blip():
    torch.manual_seed(0)
    return medblip.build(medblip.tiny_config(300, 64, image_token_id=5))


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_each_recipe_trains_its_papers_set_and_nothing_else():
    m = ad.build(_blip(), "medblip")
    info = ad.start_stage(m, "medblip", "small", "main")
    assert info["unfrozen_layers"] == [0, 15]  # 0.125 of 16 layers: one from each end
    names = _trainable(m)
    assert any("layers.15.fc1" in n for n in names) and not any("layers.7.fc1" in n for n in names)
    assert not any(n.startswith("blip.vision_model") or (n.startswith("blip.language_model") and "self_attn" in n) for n in names)

    c = ad.build(_blip(), "clinicalblip")
    ad.start_stage(c, "clinicalblip", "small", "stage1")
    s1 = _trainable(c)
    assert any("vision_model" in n and "lora_" in n for n in s1) and any("qformer" in n for n in s1)
    assert not any("language_model" in n for n in s1)
    ad.end_stage(c)
    assert not _trainable(c) and not any("lora_" in n for n, _ in c.named_parameters())  # merged
    ad.start_stage(c, "clinicalblip", "small", "stage2")
    s2 = _trainable(c)
    assert s2 and all("language_model" in n and "lora_" in n for n in s2)
    assert any("fc1" in n for n in s2) and any("out_proj" in n for n in s2)

    g = ad.build(_blip(), "minigpt_med")
    ad.start_stage(g, "minigpt_med", "large", "main")
    s3 = _trainable(g)
    assert "proj.weight" in s3 and all(n.startswith("proj.") or ("lora_" in n and ("q_proj" in n or "v_proj" in n)) for n in s3)
    assert g.num_image_tokens == (64 // 16) ** 2 // 4


@pytest.mark.parametrize("recipe", ad.RECIPES)
def test_the_large_budget_trains_more_parameters_than_the_small(recipe):
    counts = {}
    for budget in ad.BUDGETS:
        m = ad.build(_blip(), recipe)
        counts[budget] = sum(ad.start_stage(m, recipe, budget, stage)["trainable_params"] for stage in ad.STAGES[recipe][:1])
    assert counts["large"] > counts["small"]


@pytest.mark.parametrize("budget", ad.BUDGETS)
def test_the_three_recipes_train_as_many_parameters_within_ten_percent_at_each_budget(budget):
    counts = {}
    for recipe in ad.RECIPES:  # summed over the stages, each set up on a fresh backbone (as load_model counts them)
        counts[recipe] = sum(ad.start_stage(ad.build(_blip(), recipe), recipe, budget, stage)["trainable_params"]
                             for stage in ad.STAGES[recipe])
    assert max(counts.values()) <= 1.10 * min(counts.values()), counts


def test_merging_a_stage_keeps_what_it_learnt():
    """end_stage folds the LoRA update into the weights: the merged model gives the adapted model's loss."""
    m = ad.build(_blip(), "minigpt_med")
    ad.start_stage(m, "minigpt_med", "small", "main")
    for n, p in m.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)  # a LoRA that changes the output
    m.eval()
    feats = torch.randn(2, 1 + m.num_patches, 64)
    ids = torch.tensor([[5] * m.num_image_tokens + [1, 40, 41, 42, 2]] * 2)
    labels = ids.clone()
    labels[:, : m.num_image_tokens + 2] = -100
    mask = torch.ones_like(ids)
    with torch.no_grad():
        before = m.loss(feats, ids, mask, labels)
        ad.end_stage(m)
        after = m.loss(feats, ids, mask, labels)
    assert torch.allclose(before, after, atol=1e-4)


def test_bad_recipe_budget_and_parameters_are_refused_by_name():
    with pytest.raises(ValueError, match="recipe must be one of"):
        ad.check_recipe("lora", "small")
    with pytest.raises(ValueError, match="stages"):
        ad.start_stage(ad.build(_blip(), "medblip"), "medblip", "small", "stage2")
    from medlib.experiments import adaptation as exp

    base = {"profile": "tiny", "recipe": "clinicalblip", "budget": "small", "num_epochs": 2}
    exp.check_parameters(base, "04")
    with pytest.raises(ParameterError, match="num_epochs 3 with recipe clinicalblip"):
        exp.check_parameters({**base, "num_epochs": 3}, "04")
    with pytest.raises(ParameterError, match="no common paper-size model"):
        exp.check_parameters({**base, "profile": "paper"}, "04")


# -- the aggregation, on synthetic arms --------------------------------------------------------

def _items(n_studies=40):
    rows = []
    for split in ("val", "test"):
        for k in range(n_studies):
            study = f"{split}{k}"
            rows += [{"split": split, "task": "vqa", "study": study, "kind": "closed" if k % 2 else "open"},
                     {"split": split, "task": "report", "study": study, "kind": ""},
                     {"split": split, "task": "grounding", "study": study, "kind": "variable" if k % 3 else "fixed"}]
    return pd.DataFrame(rows)


def _arm(root, recipe, budget, seed, skill, items, with_items=False, zero=(), report_share=None, zoo_seed=0, prior=0.1):
    """An arm whose model scores `skill` per item (noise around it), its shuffled control 0.2, the prior `prior`; the
    model's `zero` columns exactly 0; `report_share`: the share of its most common report (answer_concentration)."""
    rng = np.random.default_rng([ad.RECIPES.index(recipe), ad.BUDGETS.index(budget), seed, zoo_seed])
    d = root / f"{recipe}-{budget}-{seed}-{zoo_seed}"
    d.mkdir()
    frame = items.copy()
    n = len(frame)

    def col(level):
        return np.clip(level + rng.normal(0, 0.05, n), 0, 1).round(4)

    for prefix, level in (("", skill), ("shuffled_", 0.2), ("prior_", prior)):
        is_test = (frame.split == "test").to_numpy()
        for c in ("rougeL", "exact_match", "meteor", "iou_strict"):
            v = np.zeros(n) if (prefix == "" and c in zero) else col(level)
            frame[prefix + c] = np.where(is_test | (prefix == ""), v, np.nan)
        tp = rng.binomial(4, level, n).astype(float)
        for c, v in (("ce_tp", tp), ("ce_fp", 4 - tp), ("ce_fn", 4 - tp)):
            frame[prefix + c] = np.where(is_test | (prefix == ""), v, np.nan)
    frame.to_csv(d / "per_sample.csv.gz", index=False, compression="gzip")
    if report_share is not None:
        pd.DataFrame([{"task": "vqa", "items": 40, "distinct_answers": 8, "top_answer_share": 0.3},
                      {"task": "report", "items": 40, "distinct_answers": 2, "top_answer_share": report_share}]
                     ).to_csv(d / "answer_concentration.csv", index=False)
    if with_items:
        with gzip.open(d / "evaluation_items.csv.gz", "wt") as f:
            items.to_csv(f, index=False)
    params = {"profile": "tiny", "recipe": recipe, "budget": budget, "seed": seed, "zoo_seed": zoo_seed}
    train = {"status": "finished", "trainable_params": {"small": 100_000, "large": 300_000}[budget] + 1000 * ad.RECIPES.index(recipe),
             "seconds_per_epoch": 10.0 + seed, "peak_memory_mb": 900.0}
    (d / "run.json").write_text(json.dumps({"run_info": {"parameters": params, "duration_s": 1.0, "data_fingerprint": "x"},
                                            "train_info": train}))
    return d


def _sweep(root, skill: dict, **kw) -> list:
    """The committed sweep's shape: the large budget on zoo builds 0-2, the small on build 0, three seeds each."""
    items, out = _items(), []
    for r in ad.RECIPES:
        for b, builds in (("large", (0, 1, 2)), ("small", (0,))):
            for z in builds:
                for s in range(3):
                    out.append(_arm(root, r, b, s, skill[r] if isinstance(skill, dict) else skill, items,
                                    with_items=not out, zoo_seed=z, **kw))
    return out


def _aggregate(tmp_path, dirs):
    out = tmp_path / "out"
    out.mkdir()
    res.aggregate(dirs, out)
    words = {c["metric"]: c for c in json.loads((out / "comparison.json").read_text())["claims"]}
    return out, words


def test_each_claim_gets_the_word_its_parts_decide(tmp_path):
    """MedBLIP best at everything: its own task's claim is reproduced; the other two papers' recipes lose theirs to it."""
    out, words = _aggregate(tmp_path, _sweep(tmp_path, {"medblip": 0.8, "clinicalblip": 0.5, "minigpt_med": 0.5}))
    assert words["VQA ROUGE-L"]["word"] == "reproduced"
    assert words["grounding strict IoU (position-variable)"]["word"] == "not reproduced"
    assert words["report CE-F1 (abnormal)"]["word"] == "not reproduced"
    claims = pd.read_csv(out / "claims.csv")
    vqa = claims[claims.claim == "adaptation_vqa"].set_index("part")
    assert vqa.loc["beats_clinicalblip", "state"] == "holds" and (vqa.zoo_builds == 3).all() and (vqa.runs == 9).all()
    assert np.isclose(vqa.loc["beats_clinicalblip", "difference"], 0.3, atol=0.03)
    text = (out / "verdict.md").read_text()
    assert "MedBLIP beats ClinicalBLIP" in text and "over its shuffled control" in text and "build 0 only" in text
    for png in ("quality_vs_parameters.png", "quality_vs_time.png"):
        assert (out / png).stat().st_size > 10_000
    # cost: the runs' mean (10, 11, 12 s) with a bootstrap interval over runs, inside their range and not a point
    cost = pd.read_csv(out / "cost.csv")
    assert np.allclose(cost.seconds_per_epoch, 11.0)
    assert (cost.seconds_per_epoch_lo >= 10.0).all() and (cost.seconds_per_epoch_hi <= 12.0).all()
    assert (cost.seconds_per_epoch_lo < 11.0).all() and (cost.seconds_per_epoch_hi > 11.0).all()
    # the budget is chosen on validation, on build 0, where both budgets ran
    assert (pd.read_csv(out / "chosen.csv").runs == 3).all()
    # the front table's line is the aggregation's words
    (tmp_path / "adaptation" / "tiny").mkdir(parents=True)
    (tmp_path / "adaptation" / "tiny" / "comparison.json").write_text((out / "comparison.json").read_text())
    line = res.front_line(tmp_path)
    assert "VQA ROUGE-L: MedBLIP's recipe, its paper's, beats the other two at a matched budget: **reproduced**" in line
    assert res.front_line(tmp_path / "elsewhere") is None and "not run yet" in report.front_table(_front_only(tmp_path))


def test_when_every_arm_is_below_the_text_only_prior_the_word_is_inconclusive(tmp_path):
    """MedBLIP still beats the other two on every build, but every arm lies below what the text alone answers."""
    out, words = _aggregate(tmp_path, _sweep(tmp_path, {"medblip": 0.6, "clinicalblip": 0.4, "minigpt_med": 0.4}, prior=0.8))
    for c in words.values():
        assert c["word"] == "inconclusive"
        assert c["gate"] == ("no recipe reads the image for this task at this budget: every arm's mean lies below the "
                             "text-only prior and no arm's 95 % interval lies above it")
    text = (out / "verdict.md").read_text()
    assert "every arm's mean lies below the text-only prior" in text
    # what the rule overrode is said: here the parts alone would give partly (MedBLIP wins, its prior check fails)
    assert "Without that rule the parts alone would give *partly*" in text
    # the parts themselves still say what they found: the gate, not the parts, set the word
    assert pd.read_csv(out / "claims.csv").set_index(["claim", "part"]).state[("adaptation_vqa", "beats_clinicalblip")] == "holds"


def test_an_arm_without_a_recorded_cost_is_named(tmp_path):
    dirs = _sweep(tmp_path, 0.6)
    run = json.loads((dirs[1] / "run.json").read_text())
    del run["train_info"]["peak_memory_mb"]
    (dirs[1] / "run.json").write_text(json.dumps(run))
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=f"{dirs[1]}.*no 'peak_memory_mb'"):
        res.aggregate(dirs, tmp_path / "out")


def _front_only(tmp_path):
    """A results folder with one paper's headline and no comparison."""
    root = tmp_path / "front"
    (root / "medblip" / "tiny").mkdir(parents=True)
    (root / "medblip" / "tiny" / "headline.json").write_text(json.dumps(
        {"notebook": "notebooks/01.ipynb", "paper": "MedBLIP", "claim": "c", "paper_number": "1", "finds": "f",
         "reproduced": "no", "figure": "f.png"}))
    return root


def test_recipes_of_equal_skill_are_inconclusive_and_one_answer_runs_are_counted(tmp_path):
    """Equal skill: no part separates, every claim inconclusive; runs that write one report for nearly every study
    are counted per run."""
    dirs = _sweep(tmp_path, 0.6)
    for d in dirs:  # two small-budget MedBLIP runs write one report for nearly every study
        params = json.loads((d / "run.json").read_text())["run_info"]["parameters"]
        stuck = (params["recipe"], params["budget"]) == ("medblip", "small") and params["seed"] in (0, 2)
        pd.DataFrame([{"task": "vqa", "items": 40, "distinct_answers": 8, "top_answer_share": 0.3},
                      {"task": "report", "items": 40, "distinct_answers": 2, "top_answer_share": 0.98 if stuck else 0.2}]
                     ).to_csv(d / "answer_concentration.csv", index=False)
        if (params["recipe"], params["budget"], params["seed"]) == ("medblip", "small", 1):  # names no abnormal finding
            rows = pd.read_csv(d / "per_sample.csv.gz")
            rows.loc[rows.split == "test", ["ce_tp", "ce_fp"]] = 0.0
            rows.to_csv(d / "per_sample.csv.gz", index=False, compression="gzip")
    out, words = _aggregate(tmp_path, dirs)
    assert all(c["word"] == "inconclusive" and not c["gate"] for c in words.values())
    text = (out / "verdict.md").read_text()
    assert "no part separates from 0" in text
    assert "report: runs giving one answer for at least 95% of the test items: MedBLIP (small) 2 of 3 (" in text
    assert "vqa: runs giving one answer for at least 95% of the test items: none" in text
    stuck = pd.read_csv(out / "degenerate.csv").set_index(["recipe", "budget", "task"])
    assert stuck.stuck_runs.to_dict()[("MedBLIP", "small", "report")] == 2
    assert stuck.no_abnormal_runs.to_dict()[("MedBLIP", "small", "report")] == 1
    assert "runs whose test reports name no abnormal finding at all: MedBLIP (small) 1 of 3; MedBLIP (large) 0 of 9" in text


def test_the_shared_backbones_box_text_comes_from_the_pretraining_split_in_the_recipes_prompt():
    """The warm-up teaches the shared OPT the box grammar on pre-training studies only (the training split is
    the recipes'), each `[detection]` answer in the prompt the recipes are trained with."""
    from medlib.data.synthcxr import build
    from medlib.zoo.adaptation import box_texts

    ds = build(image_size=64, limit=120, progress=False)
    pre = ds.split("pretrain")
    texts = box_texts(pre, ds.image_size)
    boxes = [t for t in texts if t.startswith("Question:[detection] ")]
    assert boxes and all(" Answer: <p>" in t and "{<" in t for t in boxes)
    assert sum(1 for t in texts if not t.startswith("Question:")) == sum(1 for s in pre if s.report_clean)
    train_reports = {s.report_clean for s in ds.split("train")} - {s.report_clean for s in pre}
    assert not train_reports & set(texts)


def test_a_recipes_front_leaves_off_a_dearer_budget_that_is_no_better():
    from medlib.plots import pareto_front

    assert pareto_front(np.array([0.5, 0.7, 0.6, 0.8])).tolist() == [True, True, False, True]
    assert pareto_front(np.array([0.7, 0.7])).tolist() == [True, False]
