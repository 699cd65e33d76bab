"""What notebook 04 calls: the three recipes (`models.adaptation`) trained on one multi-task mixture of
SynthCXR-IU (VQA, report generation, disease grounding) and scored on each task with its controls.

Every arm sees the same data: the training mixture (per training study its findings-first report, two of its
VQA questions and a `[detection]` sample per drawn finding) and the same validation and test items, whatever
its recipe, budget or seed. Intervals, the validation choice and the paired comparisons are the aggregation's
(`adaptation_results`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from medlib import resources
from medlib.data.iu_xray import truncate_tokens
from medlib.data.synthcxr import build, grounding_samples, testbed_vqa
from medlib.experiments import common
from medlib.experiments.priors import (
    MAX_REPORT_TOKENS,
    VQA_PER_STUDY,
    findings_first,
    task_priors,
    vqa_per_study,
)
from medlib.metrics.clinical import ABNORMAL, OBSERVATIONS, label_matrix
from medlib.metrics.grounding import grounding_scores
from medlib.metrics.text import exact_match, medblip_scores, per_report_meteor
from medlib.models import adaptation as ad
from medlib.models import medblip
from medlib.models.common import (
    answer_tokens,
    images_to_tensor,
    load_tokenizer,
    mixed_precision,
    pad_sequences,
)
from medlib.params import ParameterError
from medlib.paths import weights_fingerprint
from medlib.profiles import get_profile
from medlib.train import TrainConfig, train
from medlib.zoo import build_tokenizer
from medlib.zoo.adaptation import build_adaptation_zoo, load_adaptation_zoo

TASKS = ("vqa", "report", "grounding")
PROMPT = medblip.PROMPT  # "Question:{question} Answer:", BLIP-2's, for every task
REPORT_INSTRUCTION = "[report] write the findings and impression of this chest x-ray."
MAX_NEW_TOKENS = {"vqa": 10, "report": MAX_REPORT_TOKENS["iu_xray"], "grounding": 40}
LENGTH_GROUPS = 8  # batches of about one length (as notebook 01): little padding


build_zoo = build_adaptation_zoo  # built once before a sweep's parallel arms start (Experiment.prepare_tiny)


def check_parameters(p: dict, origin: str) -> None:
    if p.get("zoo_seed") and p["profile"] != "tiny":
        raise ParameterError(f"{origin}: zoo_seed {p['zoo_seed']} with profile {p['profile']}: only the tiny profile "
                             "starts from a zoo build")
    if p["profile"] == "paper":
        raise ParameterError(f"{origin}: the comparison runs on the shared tiny backbone (profile tiny or smoke); the "
                             "papers' own backbones differ (BLIP-2 OPT-2.7B, InstructBLIP Vicuna-7B, LLaMA-2-7B), so "
                             "there is no common paper-size model to compare the recipes on")
    if p["recipe"] == "clinicalblip" and p["num_epochs"] % 2:
        raise ParameterError(f"{origin}: num_epochs {p['num_epochs']} with recipe clinicalblip: its two stages take half "
                             "the passes each, so num_epochs must be even")


def _vqa(studies, seed: int) -> list[dict]:
    index = {s.uid: s.index for s in studies}
    qs = vqa_per_study(testbed_vqa(studies, seed), VQA_PER_STUDY)
    return [{"task": "vqa", "instruction": f"[vqa] {q['question']}", "question": q["question"], "answer": q["answer"],
             "question_type": q["question_type"], "kind": "closed" if q["answer"] in ("yes", "no") else "open",
             "study": q["study"], "image_index": index[q["study"]]} for q in qs]


def _reports(studies, target: bool) -> list[dict]:
    limit = MAX_REPORT_TOKENS["iu_xray"]
    return [{"task": "report", "instruction": REPORT_INSTRUCTION, "kind": "",
             "answer": truncate_tokens(findings_first(s.report_clean) if target else s.report_clean, limit),
             "reference": truncate_tokens(s.report_clean, limit), "study": s.uid, "image_index": s.index}
            for s in studies if s.report_clean]


def _grounding(studies, image_size: int) -> list[dict]:
    return [{**g, "task": "grounding", "kind": g["position"], "image_index": s.index}
            for s in studies for g in grounding_samples(s, image_size) if g["task"] == "detection"]


def load_data(profile: str) -> common.ExperimentData:
    """`ExperimentData`: SynthCXR-IU, the training mixture of the three tasks, and the validation and test items
    by task ({task: items}); whole splits (train to fit, validation for every choice, test reported once), the
    same items for every arm."""
    prof = get_profile(profile)
    ds = build(image_size=prof.image_size, limit=prof.data_limit, progress=False)

    def items(split, seed):
        studies = ds.split(split)
        return {"vqa": _vqa(studies, seed), "report": _reports(studies, target=False),
                "grounding": _grounding(studies, ds.image_size)}

    train = ds.split("train")
    mixture = _reports(train, target=True) + _vqa(train, seed=0) + _grounding(train, ds.image_size)
    return common.ExperimentData(images=ds, train=mixture, val=items("val", 1), test=items("test", 2))


def load_model(profile: str, recipe: str, budget: str, zoo_seed: int = 0):
    """(shared backbone wired for `recipe`, tokenizer, what trains). What trains is counted per stage before
    anything trains, on a twin of the model that each stage sets up as it will (adapters included):
    {"stages": one row per stage, "trainable_params": their sum, "total_params"}."""
    model, tok = _backbone(profile, recipe, zoo_seed)
    stages = []
    for stage in ad.STAGES[recipe]:
        twin, _ = _backbone(profile, recipe, zoo_seed)
        stages.append(ad.start_stage(twin, recipe, budget, stage))
    return model, tok, {"stages": stages, "trainable_params": sum(s["trainable_params"] for s in stages),
                        "total_params": max(s["total_params"] for s in stages)}


def _backbone(profile: str, recipe: str, zoo_seed: int = 0):
    """(shared backbone wired for `recipe`, tokenizer). tiny: build `zoo_seed` of the zoo's BLIP-2 whose OPT has
    also read box text (`medlib.zoo.adaptation`); smoke: the same classes, random."""
    prof = get_profile(profile)
    if prof.pretrained:
        root, base = load_adaptation_zoo(prof.image_size, zoo_seed)
        tok = load_tokenizer(base / "tokenizer")
        blip = medblip.Blip2ForConditionalGeneration.from_pretrained(str(root / "medblip"))
    else:
        ds = build(image_size=prof.image_size, limit=prof.data_limit, progress=False)
        tok = build_tokenizer(ds.split("pretrain") + ds.split("train"))
        blip = medblip.build(medblip.tiny_config(len(tok), prof.image_size, tok.convert_tokens_to_ids("<image>"),
                                                 tok.pad_token_id, tok.bos_token_id, tok.eos_token_id))
    model = ad.build(blip, recipe)
    model.eval()
    return model, tok


def encode(samples: list[dict], tok, num_image_tokens: int, image_token_id: int, with_answer: bool) -> list[dict]:
    """Token ids: the image placeholders, <s>, the prompt, then (training) the answer and </s>; labels on the answer."""
    out = []
    for s in samples:
        prompt = [image_token_id] * num_image_tokens + [tok.bos_token_id] + tok(PROMPT.format(question=s["instruction"]),
                                                                                add_special_tokens=False)["input_ids"]
        answer = tok(" " + s["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] if with_answer else []
        out.append({**s, "input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return out


def pixels(ds, indices) -> torch.Tensor:
    return images_to_tensor(ds.images[list(indices)])


def features(model: ad.SharedBackbone, ds, indices, batch_size: int = 128) -> dict[int, torch.Tensor]:
    """The ViT's features of each image, for a frozen ViT (computed in batches, no gradient)."""
    idx, out = sorted(set(indices)), {}
    with torch.no_grad(), mixed_precision(model):
        for i in range(0, len(idx), batch_size):
            chunk = idx[i:i + batch_size]
            out.update(zip(chunk, model.vision_features(pixels(ds, chunk).to(model.device)).cpu()))
    return out


def cached_features(model: ad.SharedBackbone, ds, indices) -> dict[int, torch.Tensor]:
    """`features` of the zoo's ViT, kept on disk so every arm whose ViT stays frozen reuses them."""
    return common.cached_features(("adaptation", weights_fingerprint(model.blip.vision_model), ds.fingerprint), indices,
                                  lambda idx: features(model, ds, idx))


def collate(batch, feats, pad_id: int):
    ids, mask = pad_sequences([b["input_ids"] for b in batch], pad_id)
    labels, _ = pad_sequences([b["labels"] for b in batch], -100)
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels, "image_index": [b["image_index"] for b in batch]}
    if feats is not None:
        out["features"] = torch.stack([feats[b["image_index"]] for b in batch])
    return out


def make_loss(ds):
    def loss_fn(model, batch):
        dev = model.device
        # the ViT trains (ClinicalBLIP's stage 1): features from pixels every step; else the cached ones
        f = batch["features"].to(dev) if "features" in batch else model.vision_features(pixels(ds, batch["image_index"]).to(dev))
        loss = model.loss(f, batch["input_ids"].to(dev), batch["attention_mask"].to(dev), batch["labels"].to(dev))
        return loss, answer_tokens(batch["labels"])
    return loss_fn


def image_indices(mixture: list[dict], items: dict) -> list[int]:
    """Every image the arm trains on or is scored on: the training mixture's, then each split's and task's items'."""
    return [s["image_index"] for s in mixture] + [s["image_index"] for split in items.values() for v in split.values() for s in v]


def fit(model: ad.SharedBackbone, tok, ds, mixture: list[dict], indices: list[int], recipe: str, budget: str,
        config: TrainConfig, device, checkpoint) -> tuple:
    """Train `recipe`'s stages in order (`models.adaptation.STAGES`), each with its learning rate and its share of
    `config.num_epochs` (ClinicalBLIP: half in each stage); the ViT's features are computed once while it is frozen
    (after stage 1 it is its own). `checkpoint(stage)` is each stage's checkpoint file. Returns (the model, its
    history: the loss curve as a frame with a row per optimizer step and its stage (`curve`) and as [step, loss] pairs,
    the training seconds and seconds per epoch, the device)."""
    epochs = {"main": config.num_epochs, "stage1": config.num_epochs // 2, "stage2": config.num_epochs - config.num_epochs // 2}
    enc = encode(mixture, tok, model.num_image_tokens, model.blip.config.image_token_id, with_answer=True)
    curves, seconds = [], 0.0
    for stage in ad.STAGES[recipe]:
        ad.start_stage(model, recipe, budget, stage)
        vit_trains = any(p.requires_grad for p in model.blip.vision_model.parameters())
        feats = None if vit_trains else (cached_features(model, ds, indices) if stage in ("main", "stage1")
                                         else features(model, ds, indices))
        cfg = replace(config, num_epochs=epochs[stage], lr=ad.LEARNING_RATES[recipe][stage], desc=f"{recipe} {stage}",
                      length_groups=LENGTH_GROUPS)
        history = train(model, enc, lambda b, f=feats: collate(b, f, tok.pad_token_id), make_loss(ds), cfg, device=device,
                        checkpoint_path=checkpoint(stage), lengths=[len(e["input_ids"]) for e in enc])
        ad.end_stage(model)
        seconds += history.get("train_seconds") or 0.0
        curves.append(pd.DataFrame(history["loss_curve"], columns=["step", "loss"]).assign(stage=stage))
    model.eval()
    curve = pd.concat(curves, ignore_index=True)
    return model, {"curve": curve, "loss_curve": curve[["step", "loss"]].values.tolist(), "train_seconds": seconds,
                   "seconds_per_epoch": seconds / config.num_epochs, "device": str(device)}


def generate(model: ad.SharedBackbone, tok, feats, samples: list[dict], batch_size: int = 64) -> list[str]:
    """Greedy answers in the samples' order, batched by task and prompt length; each task has its budget
    (`MAX_NEW_TOKENS`). Stops on </s>, the pad token or a newline."""
    enc = encode(samples, tok, model.num_image_tokens, model.blip.config.image_token_id, with_answer=False)
    stop = [tok.eos_token_id, tok.pad_token_id] + [i for i in [tok.convert_tokens_to_ids("Ċ")] if i not in (None, tok.unk_token_id)]
    order = sorted(range(len(enc)), key=lambda k: (enc[k]["task"], len(enc[k]["input_ids"])))
    outs = [""] * len(enc)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in tqdm(batches, desc="generating", unit="batch", mininterval=1.0):
        ids, mask = pad_sequences([enc[k]["input_ids"] for k in chunk], tok.pad_token_id, side="left")
        f = torch.stack([feats[enc[k]["image_index"]] for k in chunk]).to(model.device)
        with torch.no_grad(), mixed_precision(model):
            gen = model.generate(f, ids.to(model.device), mask.to(model.device), MAX_NEW_TOKENS[enc[chunk[0]]["task"]], stop)
        for k, text in zip(chunk, tok.batch_decode(gen, skip_special_tokens=True)):
            outs[k] = text.split("\n")[0].strip()
    return outs


SCORES = ("rougeL", "exact_match", "meteor", "ce_tp", "ce_fp", "ce_fn", "iou_strict")
_ABNORMAL = [OBSERVATIONS.index(o) for o in ABNORMAL]


def score(task: str, outputs: list[str], samples: list[dict]) -> dict[str, list[float]]:
    """Per-item scores of one task (`SCORES`; NaN where a score is not the task's): VQA ROUGE-L (MedBLIP's
    protocol) and exact match (closed accuracy on the yes / no questions); reports METEOR and, per report, the
    true / false positives and false negatives of the 13 abnormal observations (the abnormal-only CE-F1 is
    their micro F1); grounding the strict IoU."""
    n = len(samples)
    out = {k: [float("nan")] * n for k in SCORES}
    if not n:
        return out
    if task == "vqa":
        refs = [s["answer"] for s in samples]
        out["rougeL"] = medblip_scores(outputs, refs)["rougeL"]
        out["exact_match"] = exact_match(outputs, refs)
    elif task == "report":
        refs = [s["reference"] for s in samples]
        out["meteor"] = [float(x) for x in per_report_meteor(outputs, refs)]
        p, g = label_matrix(outputs)[:, _ABNORMAL], label_matrix(refs)[:, _ABNORMAL]
        out["ce_tp"], out["ce_fp"], out["ce_fn"] = ((p & g).sum(1).tolist(), (p & (1 - g)).sum(1).tolist(),
                                                    ((1 - p) & g).sum(1).tolist())
    elif task == "grounding":
        out["iou_strict"] = grounding_scores(outputs, [s["boxes"] for s in samples])["per_sample"]["iou_strict"]
    else:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    return out


def score_rows(split: str, items: dict[str, list[dict]], model: dict, shuffled: dict | None = None,
               prior: dict | None = None, digits: int = 4):
    """One row per evaluation item of `split` (tasks in `TASKS` order): its task, study and kind, and each
    system's per-item scores (model; on the reported split the image-shuffled control and the text-only prior, prefixed)."""
    frames = []
    for task in TASKS:
        f = pd.DataFrame({"split": split, "task": task, "study": [s["study"] for s in items[task]],
                          "kind": [s["kind"] for s in items[task]]})
        for prefix, per in (("", model), ("shuffled_", shuffled), ("prior_", prior)):
            for k in SCORES:
                f[prefix + k] = np.round(per[task][k], digits) if per is not None else np.nan
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def evaluation_items(items: dict[str, dict[str, list[dict]]], splits: tuple[str, ...]):
    return pd.DataFrame([{"split": split, "task": task, "study": s["study"], "kind": s["kind"], "instruction": s["instruction"],
                          "answer": s.get("reference", s["answer"])}
                         for split in splits for task in TASKS for s in items[split][task]])


def predictions(outputs: dict, shuffled: dict, prior: dict, reported: str):
    """Every answer as written, one row per evaluation item in `evaluation_items` order: the model's (validation,
    and test where the run reads it), and on the `reported` split the image-shuffled control's and the prior's."""
    frames = []
    for split in outputs:
        for task in TASKS:
            f = pd.DataFrame({"split": split, "task": task, "model": outputs[split][task]})
            f["shuffled"] = shuffled[task] if split == reported else ""
            f["prior"] = prior[task] if split == reported else ""
            frames.append(f)
    return pd.concat(frames, ignore_index=True)


def summarise(task: str, per: dict[str, list[float]], samples: list[dict]) -> dict:
    """One run's headline of a task (means over items; the aggregation adds the intervals): VQA ROUGE-L and closed
    accuracy; report METEOR and abnormal-only CE-F1; grounding strict IoU on position-variable findings and on all."""
    if task == "vqa":
        closed = [e for e, s in zip(per["exact_match"], samples) if s["kind"] == "closed"]
        return {"rougeL": float(np.mean(per["rougeL"])), "closed_accuracy": float(np.mean(closed)) if closed else float("nan")}
    if task == "report":
        tp, fp, fn = (float(np.sum(per[k])) for k in ("ce_tp", "ce_fp", "ce_fn"))
        return {"meteor": float(np.mean(per["meteor"])), "ce13_micro_f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0}
    variable = [v for v, s in zip(per["iou_strict"], samples) if s["kind"] == "variable"]
    return {"iou_strict": float(np.mean(per["iou_strict"])),
            "iou_strict_variable": float(np.mean(variable)) if variable else float("nan")}


def evaluate(model: ad.SharedBackbone, tok, data: common.ExperimentData, split: str, indices: list[int]) -> common.Evaluation:
    """The trained arm on every task: its answers and per-item scores on validation and on the reported `split`, and
    there the image-shuffled control's and the text-only prior's. The summaries are {task: headline}. `detail`: each
    system's summary by name (`summary`), the answer concentration per task and a few answers of each task."""
    items = {"val": data.val, split: data.reported(split)}
    final = features(model, data.images, indices)  # the ViT as trained (changed only by ClinicalBLIP's stage 1)

    def answer(by_task: dict) -> dict:  # one generation pass over every task's items, split back by task
        answers = iter(generate(model, tok, final, [s for t in TASKS for s in by_task[t]]))
        return {t: [next(answers) for _ in by_task[t]] for t in TASKS}

    splits = ("val", "test") if split == "test" else ("val",)
    outputs = {name: answer(items[name]) for name in splits}
    shuffled = answer({t: common.image_shuffled(items[split][t]) for t in TASKS})
    prior = task_priors(data.train, items[split])
    per = {name: {t: score(t, outputs[name][t], items[name][t]) for t in TASKS} for name in outputs}
    per_shuffled, per_prior = ({t: score(t, answers[t], items[split][t]) for t in TASKS} for answers in (shuffled, prior))
    summary = {name: {t: summarise(t, p[t], items[split][t]) for t in TASKS} for name, p in
               (("model", per[split]), ("image-shuffled control", per_shuffled), ("text-only prior", per_prior))}
    rows = pd.concat([score_rows(name, items[name], per[name], *((per_shuffled, per_prior) if name == split else ()))
                      for name in splits])
    examples = pd.concat([pd.DataFrame(items[split][t])[["task", "instruction"]].assign(
        reference=[s.get("reference", s["answer"]) for s in items[split][t]], prediction=outputs[split][t]).head(4) for t in TASKS])
    return common.Evaluation(split, summary["model"], summary["image-shuffled control"], summary["text-only prior"],
                             {t: summarise(t, per["val"][t], items["val"][t]) for t in TASKS},
                             evaluation_items(items, splits), rows, predictions(outputs, shuffled, prior, split), outputs[split],
                             {"summary": summary, "concentration": answer_concentration(outputs[split]), "examples": examples})


def table(evaluation: common.Evaluation) -> pd.DataFrame:
    """The arm's metrics table: one row per system and task."""
    return pd.DataFrame([{"system": name, "task": t, **m} for name, by_task in evaluation.detail["summary"].items()
                         for t, m in by_task.items()])


def headline(evaluation: common.Evaluation) -> str:
    """One line for the end of the run: each task's headline beside the image-shuffled control's."""
    return f"on {evaluation.split}: " + "; ".join(
        f"{t} {key} {evaluation.metrics[t][key]:.3f} (image-shuffled {evaluation.shuffled[t][key]:.3f})"
        for t, key in (("vqa", "rougeL"), ("report", "ce13_micro_f1"), ("grounding", "iou_strict_variable")))


def record(evaluation: common.Evaluation, history: dict, trainable: dict, data: common.ExperimentData, lr: dict,
           batch_size: int) -> dict:
    """What run.json keeps of the arm beside its parameters (`Run.finish`): what the aggregation reads. The peak
    memory is read here, after evaluation."""
    metrics = {evaluation.split: evaluation.metrics, "image_shuffled": evaluation.shuffled, "text_prior": evaluation.prior}
    metrics |= {"val": evaluation.val, **({"split": "val"} if evaluation.split == "val" else {})}  # committed: no "split"
    return {"metrics": metrics,
            "loss_curve": history["loss_curve"], "train_seconds": history["train_seconds"],
            "seconds_per_epoch": history["seconds_per_epoch"], "peak_memory_mb": resources.peak_memory_mb(history["device"]),
            "trainable_params": trainable["trainable_params"], "total_params": trainable["total_params"],
            "stages": trainable["stages"], "num_train_samples": len(data.train), "lr": lr, "batch_size": batch_size}


def answer_concentration(outputs: dict) -> pd.DataFrame:
    """Per task: test items, distinct answers and the most common answer's share (degenerate runs show here)."""
    return pd.DataFrame([{"task": t, "items": len(o), "distinct_answers": len(set(o)),
                          "top_answer_share": pd.Series(o).value_counts(normalize=True).iloc[0] if o else float("nan")}
                         for t, o in outputs.items()])


def what_to_notice(evaluation: common.Evaluation) -> str:
    """The notebook's closing remarks for one run, per task computed from its table: the headline against the
    image-shuffled control and the text-only prior, and how many distinct answers the model wrote."""
    model, shuffled, prior, concentration = evaluation.metrics, evaluation.shuffled, evaluation.prior, evaluation.detail["concentration"]
    lines = []
    for task, key, what in (("vqa", "rougeL", "VQA ROUGE-L"), ("report", "ce13_micro_f1", "report abnormal-only CE-F1"),
                            ("grounding", "iou_strict_variable", "grounding strict IoU, position-variable findings")):
        m, s, p = model[task][key], shuffled[task][key], prior[task][key]
        c = concentration.set_index("task").loc[task]
        lines.append(f"- {what}: {m:.3f}, {m - s:+.3f} against its image-shuffled control and {m - p:+.3f} against the "
                     f"text-only prior; {int(c.distinct_answers)} distinct answers for {int(c['items'])} {evaluation.split} items, the most "
                     f"common {c.top_answer_share:.0%} of them.")
    lines.append("- One run has no interval here; which recipe wins at a matched budget, over seeds, is the verdict's "
                 "question (above).")
    return "\n".join(lines)
