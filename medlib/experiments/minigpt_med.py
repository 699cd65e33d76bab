"""What notebook 03 calls: MiniGPT-Med's training mixture, grounding evaluation (strict and the
paper's lenient IoU), baselines, and the other tasks from the same model."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, LlamaForCausalLM

from medlib import boxes, plots, resources
from medlib.boxes import format_answer
from medlib.data import rsna
from medlib.data.loaders import check_images
from medlib.data.synthcxr import anatomy, build, grounding_samples, grounding_samples_of
from medlib.experiments import common, priors, probes
from medlib.experiments.priors import VQA_PER_STUDY, vqa_per_study
from medlib.metrics.clinical import ce_scores
from medlib.metrics.grounding import grounding_rows, grounding_scores, grounding_summary
from medlib.metrics.text import bert_sim, exact_match
from medlib.models import minigpt_med as mg
from medlib.models.common import (
    RANDOM_WEIGHTS,
    build_random,
    images_to_tensor,
    load_tokenizer,
    with_tokenizer_ids,
)
from medlib.params import ParameterError, require_paths
from medlib.paths import weights_fingerprint
from medlib.profiles import get_profile
from medlib.train import train
from medlib.zoo import build_tokenizer, load_state, local_tokenizer
from medlib.zoo.medblip import load_zoo
from medlib.zoo.minigpt_med import STARTS, build_minigpt_zoo, eva_path, start_path

REPORT_INSTRUCTION = "Describe the findings of this chest X-ray."
PAPER_IMAGE_SIZE = 448
ALL_TASKS = ("detection", "refer", "identify", "vqa", "report")


# built once before a sweep's arms start (Experiment.prepare_tiny); the in-domain stage, build 0's only, ships with it
build_zoo = partial(build_minigpt_zoo, in_domain=False)


def check_parameters(p: dict, origin: str) -> None:
    """What an arm would refuse later: an empty or (on RSNA) impossible task mixture, the paper profile's data, an
    image side whose patches cannot be grouped 4 at a time, a tiny-only starting point asked of another profile."""
    if not p["tasks"]:
        raise ParameterError(f"{origin}: parameter 'tasks' is empty; choose some of {', '.join(ALL_TASKS)}")
    if p["profile"] != "tiny" and (p["grounding_stage"] != "general" or p["zoo_seed"]):
        raise ParameterError(f"{origin}: grounding_stage and zoo_seed choose between the tiny zoo's starting points; the "
                             f"{p['profile']} profile has no grounding stage (paper: pass released_checkpoint)")
    if p["zero_shot"] and p["profile"] == "tiny" and p["grounding_stage"] == "none":
        raise ParameterError(f"{origin}: zero_shot with grounding_stage 'none' would evaluate a projection nothing has trained; "
                             "choose a grounding stage to evaluate as it is")
    if p["profile"] == "paper":
        if {"vqa", "report"} & set(p["tasks"]):
            raise ParameterError(f"{origin}: tasks {p['tasks']}: RSNA Pneumonia has boxes only, so the paper profile "
                                 "trains detection / refer / identify; leave out vqa and report")
        require_paths(p, {"rsna_labels_csv": "file", "rsna_image_dir": "dir"}, origin)
    side = p["image_size"]
    patch = mg.patch_size(p["profile"] == "paper", side) if side else 0  # EVA ViT-g's 14 px; the tiny zoo's ViT's 16 px
    if side and (side % patch or (side // patch) % 2):
        raise ParameterError(f"{origin}: image_size {side} is not an even number of {patch} px patches "
                             f"(4 neighbouring patch tokens become one LLM token); e.g. {2 * patch * max(1, round(side / (2 * patch)))}")
    for name in ("released_checkpoint", "eva_checkpoint"):
        if p[name]:
            require_paths(p, {name: "file"}, origin)


def load_data(profile: str, tasks: list[str], seed: int, rsna_labels_csv: str = "", rsna_image_dir: str = "",
              image_size: int = 0) -> common.ExperimentData:
    """`ExperimentData`: the image set, the training mixture, the validation and test detection samples (every
    finding of every study of the split, each with its `position`, "fixed" or "variable") and, as `other_tests`, the
    VQA and report tests. smoke / tiny: SynthCXR-IU's whole splits at `image_size` (0: the profile's side); paper:
    RSNA Pneumonia's positive patients (0: 448), grounding only. `seed` orders the training mixture only."""
    bad = [t for t in tasks if t not in ALL_TASKS]
    if bad or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {', '.join(ALL_TASKS)}; got {tasks}")
    if profile == "paper":
        resources.check_paper_resources("minigpt_med")
        if {"vqa", "report"} & set(tasks):
            raise ValueError(f"tasks {tasks}: RSNA Pneumonia has boxes only, so the paper profile trains "
                             "detection / refer / identify; leave out vqa and report")
        ds = rsna.load(rsna_labels_csv, rsna_image_dir, image_side(profile, image_size))
        check_images(ds.images.paths, rsna_labels_csv)  # before the model loads
    else:
        # the images at the side the encoder is built for (`load_model`): another side is another rendering
        ds = build(image_size=image_side(profile, image_size), limit=get_profile(profile).data_limit, progress=False)

    def detection(split):
        return [{**g, "image_index": s.index} for s in ds.split(split) for g in grounding_samples(s, ds.image_size)
                if g["task"] == "detection"]

    def mixture(studies):
        out = [{**g, "image_index": s.index} for s in studies for g in grounding_samples(s, ds.image_size) if g["task"] in tasks]
        if "vqa" in tasks:
            out += vqa_per_study(priors.vqa_instructions(studies, seed=0), VQA_PER_STUDY)
        if "report" in tasks:
            out += priors.report_instructions(studies, REPORT_INSTRUCTION)
        return out

    train, val, test = mixture(ds.split("train")), detection("val"), detection("test")
    if profile == "paper":
        return common.ExperimentData(ds, train, test, val=val)
    return common.ExperimentData(ds, train, test, other_tasks(ds, "test"), val=val)


def other_tasks(ds, split: str) -> dict:
    """The VQA and report samples of a split's studies, scored beside grounding (`score_other_tasks`)."""
    return {"vqa": priors.vqa_instructions(ds.split(split), seed={"val": 1, "test": 2}[split]),
            "report": priors.report_instructions(ds.split(split), REPORT_INSTRUCTION)}


def image_side(profile: str, image_size: int = 0) -> int:
    """The image side an arm runs at: `image_size`, or 0 for the profile's (paper: 448, MiniGPT-v2's)."""
    return image_size or (PAPER_IMAGE_SIZE if profile == "paper" else get_profile(profile).image_size)


def to_pixels(ds, images: np.ndarray) -> torch.Tensor:
    """(N, S, S) uint8 images -> the encoder's input, normalised as the data set's encoder expects
    (EVA's CLIP statistics for the paper profile's RSNA images; medlib's tiny zoo its own)."""
    return images_to_tensor(images, getattr(ds, "pixel_mean", 0.5), getattr(ds, "pixel_std", 0.25))


def load_model(profile: str, lora_r: int, lora_alpha: int, use_lora: bool = True, image_size: int = 0,
               released_checkpoint: str = "", llm_checkpoint: str = "", eva_checkpoint: str = "",
               grounding_stage: str = "general", zoo_seed: int = 0):
    """(model, tokenizer, trainable summary). smoke: random tiny models; tiny: build `zoo_seed` of the zoo's EVA and
    LLaMA, started at `grounding_stage` (`zoo.minigpt_med.STARTS`); paper: EVA ViT-g (`eva_checkpoint`, random
    without) and LLaMA-2-chat from `llm_checkpoint` (hub name or folder; default meta-llama/Llama-2-7b-chat-hf) in
    bf16. `released_checkpoint`: MiniGPT-Med's projection + LoRA (`minigpt_med.load_released_checkpoint`) loaded
    over the fresh adapters. `image_size` 0: the profile's side, as in `load_data`."""
    prof = get_profile(profile)
    image_size = image_side(profile, image_size)
    loaded, projection = {}, None  # projection: the grounding stage's llama_proj weights (tiny)
    if profile == "paper":
        resources.check_paper_resources("minigpt_med")
        if llm_checkpoint == RANDOM_WEIGHTS:
            tok = local_tokenizer()
            llm = build_random(LlamaForCausalLM, with_tokenizer_ids(mg.llama_paper_config(), tok), torch.bfloat16)
            vit = build_random(mg.vit_paper, image_size, torch.bfloat16)
        else:
            name = llm_checkpoint or mg.PAPER_LLM
            tok = AutoTokenizer.from_pretrained(name)
            if tok.pad_token is None:  # LLaMA's tokenizer has none; <unk> (id 0) is LLaMA-2's pad id
                tok.pad_token = tok.unk_token
            llm = LlamaForCausalLM.from_pretrained(name, dtype=torch.bfloat16)
            vit = mg.vit_paper(image_size)
        loaded["eva_weights"] = mg.load_eva_weights(vit, eva_checkpoint) if eva_checkpoint else "random"
    elif prof.pretrained:
        root = build_minigpt_zoo(image_size=image_size, zoo_seed=zoo_seed, in_domain=grounding_stage == "in-domain")
        base, _ = load_zoo(image_size, zoo_seed=zoo_seed)
        tok = load_tokenizer(base / "tokenizer")
        vit = mg.vit_tiny(image_size)
        vit.load_state_dict(load_state(eva_path(root)))
        start = start_path(root, grounding_stage)
        llm = LlamaForCausalLM.from_pretrained(str(start / "llama"))
        if grounding_stage != "none":
            projection = load_state(start / "llama_proj.pt")
    else:
        ds = build(image_size=prof.image_size, limit=prof.data_limit, progress=False)
        tok = build_tokenizer(ds.split("pretrain") + ds.split("train"))
        vit = mg.vit_tiny(image_size)
        llm = LlamaForCausalLM(mg.llama_tiny_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id))
    model = mg.MiniGPTMed(vit, llm)
    if projection is not None:
        model.llama_proj.load_state_dict(projection)
        loaded["start"] = STARTS[grounding_stage]
    if profile == "paper":
        model.to(torch.bfloat16)  # 8B parameters: bf16 throughout, as the LLM was loaded
    summary = {**mg.freeze_for_training(model, lora_r, lora_alpha, 0.05, use_lora=use_lora), **loaded}
    if released_checkpoint:
        summary["released_checkpoint_keys"] = len(mg.load_released_checkpoint(model, released_checkpoint))
    model.eval()
    return model, tok, summary


def cached_features(model, ds, indices, key: str) -> dict[int, torch.Tensor]:
    """Frozen EVA + LayerNorm patch features, once per image, on disk for every arm of a sweep."""
    frozen = weights_fingerprint(model.visual_encoder), weights_fingerprint(model.ln_vision)

    def compute(idx):
        feats = {}
        for i in range(0, len(idx), 128):
            chunk = idx[i:i + 128]
            feats.update(zip(chunk, model.vit_features(to_pixels(ds, ds.images[chunk]).to(model.device)).cpu()))
        return feats

    return common.cached_features((key, frozen, ds.fingerprint), indices, compute, prefix="minigpt_")


def make_collate(ds, feats, box_augment: bool, seed: int):
    rng = np.random.default_rng(seed)

    def collate(batch):
        out_feats, answers = [], []
        for b in batch:
            if box_augment and b["task"] in ("detection", "refer") and rng.random() < 0.5:
                img, moved = boxes.shift_scale(np.asarray(ds.images[b["image_index"]]), b["boxes"], rng)
                out_feats.append(("image", to_pixels(ds, img[None])[0]))
                answers.append(format_answer(b["label"], moved))
            else:
                out_feats.append(("feat", feats[b["image_index"]]))
                answers.append(b["answer"])
        return {"items": out_feats, "instructions": [b["instruction"] for b in batch], "answers": answers}

    return collate


def fit(model, tok, ds, feats, train_mix: list[dict], cfg, box_augment: bool, zero_shot: bool, device) -> tuple:
    """MiniGPT-Med's fine-tuning on the mixture (LoRA and the projection, answer tokens only): (the model, the training
    history). `zero_shot`: nothing trains, the starting point is evaluated as it is."""
    if zero_shot:
        return model, {"loss_curve": [], "zero_shot": True}
    return model, train(model, train_mix, make_collate(ds, feats, box_augment, cfg.seed), make_loss(tok), cfg, device=device)


def make_loss(tok):
    def loss_fn(model, batch):
        feats = []
        for kind, x in batch["items"]:
            if kind == "image":
                feats.append(model.vit_features(x[None].to(model.device))[0])
            else:
                feats.append(x.to(model.device))
        return mg.answer_loss(model, tok, model.project(torch.stack(feats)), batch["instructions"], batch["answers"])

    return loss_fn


@torch.no_grad()
def score_other_tasks(model, tok, feats, tasks: list[str], test_vqa: list[dict], test_reports: list[dict]) -> dict:
    """What the same model does on the mixture's other tasks: VQA exact match and BERT-Sim; report
    BERT-Sim and clinical efficacy (the report labeller's CE scores)."""
    out = {}
    if "vqa" in tasks and test_vqa:
        answers, refs = generate(model, tok, feats, test_vqa, 8), [s["answer"] for s in test_vqa]
        out["vqa"] = {"exact_match": float(np.mean(exact_match(answers, refs))),
                      **{k: v for k, v in bert_sim(answers, refs).items() if k != "per_sample"}}
    if "report" in tasks and test_reports:
        reports, refs = generate(model, tok, feats, test_reports, 48), [s["answer"] for s in test_reports]
        out["report"] = {**{k: v for k, v in bert_sim(reports, refs).items() if k != "per_sample"},
                         **{k: v for k, v in ce_scores(reports, refs).items() if k != "per_sample"}}
    return out


def anatomy_check(model, tok, ds, key: str, max_new_tokens: int = 40, split: str = "test") -> dict:
    """What a starting point grounds before fine-tuning: `[detection]` of each normal structure (`anatomy.ANATOMY`) in
    every image of `split`, the general grounding stage's own task on studies it never saw; strict IoU, all and per structure."""
    studies = ds.split(split)
    samples = [{**g, "image_index": s.index} for s, anat in zip(studies, anatomy(studies, ds.image_size, ds.meta["seed"]))
               for g in grounding_samples_of(anat, s.uid, ds.image_size) if g["task"] == "detection"]
    feats = cached_features(model, ds, [s.index for s in studies], key)
    per = grounding_scores(generate(model, tok, feats, samples, max_new_tokens), [s["boxes"] for s in samples])["per_sample"]
    frame = pd.DataFrame({"structure": [s["label"] for s in samples], "iou": per["iou_strict"]})
    return {"iou_strict": float(frame.iou.mean()), **frame.groupby("structure").iou.mean().round(4).to_dict()}


def explorer(model, tok, feats, ds, pools: dict[str, list[dict]], max_new_tokens: int):
    """`plots.answer_explorer` on MiniGPT-Med's answers: a sample's image, prompt, answer and reference."""
    return plots.answer_explorer(ds, pools, lambda s: generate(model, tok, feats, [s], max_new_tokens)[0],
                                 lambda s: mg.TEMPLATE.format(instruction=s["instruction"]))


def generate(model, tok, feats, samples, max_new_tokens: int = 32, batch_size: int = 64, num_beams: int = 1) -> list[str]:
    outs = []
    for i in tqdm(range(0, len(samples), batch_size), desc="generating", unit="batch", mininterval=1.0):
        chunk = samples[i:i + batch_size]
        img = model.project(torch.stack([feats[s["image_index"]] for s in chunk]).to(model.device))
        x, mask, _ = mg.splice(model, tok, img, [s["instruction"] for s in chunk])
        gen = model.llm.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=num_beams, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        outs += [t.strip() for t in tok.batch_decode(gen, skip_special_tokens=True)]
    return outs


def evaluate(model, tok, data: common.ExperimentData, split: str, feats, tasks: list[str], max_new_tokens: int = 40,
             num_beams: int = 1, seed: int = 0, anatomy_key: str = "") -> common.Evaluation:
    """Grounding of every finding of `split` (test, or validation), its image-shuffled control and the label prior on the
    same findings, the model on validation; two box baselines, the other tasks and, with `anatomy_key` (a starting point,
    zero-shot), that split's normal anatomy. `detail`: those, each system's per-finding scores (`scored`), the findings
    (`items`) and the samples an explorer may show (`pools`)."""
    ground, val, images = data.reported(split), data.val, data.images
    outputs = generate(model, tok, feats, ground, max_new_tokens, num_beams=num_beams)
    shuffled_outputs = generate(model, tok, feats, common.image_shuffled(ground), max_new_tokens, num_beams=num_beams)
    prior_outputs = priors.label_prior(data.train, ground)
    val_outputs = (outputs if split == "val" else generate(model, tok, feats, val, max_new_tokens, num_beams=num_beams)) if val else []
    (grounding, detail), (shuffled, shuffled_detail), (prior, prior_detail) = (
        grounding_summary(o, ground, seed) for o in (outputs, shuffled_outputs, prior_outputs))
    val_grounding, val_detail = (grounding, detail) if split == "val" else grounding_summary(val_outputs, val, seed) if val else ({}, None)
    baselines = {name: grounding_summary(o, ground, seed)[0] for name, o in
                 (("mean training box", priors.mean_box_baseline(data.train, ground)), ("centred box", priors.centred_baseline(ground)))}
    anatomy = anatomy_check(model, tok, images, anatomy_key, max_new_tokens, split) if anatomy_key else {}
    # the other tasks on the reported split's studies (none on the paper profile: RSNA has boxes only)
    pools = other_tasks(images, split) if split == "val" and data.other_tests else data.other_tests
    if missing := {s["image_index"] for p in pools.values() for s in p} - set(feats):
        raise ValueError(f"feats lacks the features of {len(missing)} image(s) of the {split} split's other tasks")
    other = score_other_tasks(model, tok, feats, tasks, pools.get("vqa", []), pools.get("report", []))
    parts = [("val", val, val_detail, val_outputs)] if split == "test" and val else []
    parts.append((split, ground, detail, outputs))
    items = pd.concat([pd.DataFrame(g)[["study", "label", "position", "answer"]].assign(split=name) for name, g, _, _ in parts])
    # every answer as written and every finding's scores, in the order of the items; the controls on the reported split
    mine = {"shuffled": shuffled_outputs, "prior": prior_outputs}
    predictions = pd.concat([pd.DataFrame({"split": name, "model": o, **(mine if name == split else {})}) for name, _, _, o in parts])
    per_sample = pd.concat([grounding_rows(name, g, d["per_sample"], *((shuffled_detail["per_sample"], prior_detail["per_sample"])
                                                                    if name == split else ())) for name, g, d, _ in parts])
    return common.Evaluation(split, grounding, shuffled, prior, val_grounding, items, per_sample, predictions, outputs,
                             {"baselines": baselines, "anatomy": anatomy, "other": other, "items": ground,
                              "scored": {"model": detail, "image-shuffled control": shuffled_detail, "label prior": prior_detail},
                              "pools": {"detection": ground, **pools}})


def table(evaluation: common.Evaluation) -> pd.DataFrame:
    """The arm's grounding table: one row per system (the model, its image-shuffled control, the label prior, two boxes)."""
    systems = {"model": evaluation.metrics, "image-shuffled control": evaluation.shuffled, "label prior": evaluation.prior,
               **evaluation.detail["baselines"]}
    return pd.DataFrame(systems).T[[c for c in TABLE_COLUMNS if c in evaluation.metrics]]


def per_finding(evaluation: common.Evaluation) -> pd.DataFrame:
    """The model's strict IoU per finding on the reported split."""
    return pd.DataFrame(evaluation.detail["scored"]["model"]["per_class"]).T.rename_axis("finding").reset_index()


def record(evaluation: common.Evaluation, history: dict, trainable: dict, data: common.ExperimentData, lr: float,
           batch_size: int) -> dict:
    """What run.json keeps of the arm beside its parameters (`Run.finish`): what the aggregation reads."""
    said = {"split": "val"} if evaluation.split == "val" else {}  # a committed arm reads test: no key (report.against_committed)
    base = evaluation.detail["baselines"]
    return {"metrics": {"grounding": evaluation.metrics, "image_shuffled": evaluation.shuffled, "label_prior": evaluation.prior,
                        "baseline_mean_box": base["mean training box"], "baseline_centred": base["centred box"],
                        "val": evaluation.val, "anatomy": evaluation.detail["anatomy"], **evaluation.detail["other"],
                        "per_class": evaluation.detail["scored"]["model"]["per_class"], **said},
            "loss_curve": history["loss_curve"], "trainable_params": trainable["trainable_params"],
            "total_params": trainable["total_params"], "num_train_samples": len(data.train), "num_val_findings": len(data.val),
            "num_test_findings": len(data.test), "lr": lr, "batch_size": batch_size}


def probe_encoder(feats: dict, ds, train: list[dict], val: list[dict]):
    """`probes.mean_token_probe` on the frozen EVA's patch features (after its LayerNorm), per finding."""
    return probes.mean_token_probe(feats, ds, train, val)


def probe_studies(ds, split: str) -> list[dict]:
    """One entry per study of `split` (with or without findings), for the linear probe."""
    return [{"image_index": s.index} for s in ds.split(split)]


TABLE_COLUMNS = ("iou_strict_variable", "iou_strict_variable_lo", "iou_strict_variable_hi", "iou_strict_fixed",
                 "iou_strict_fixed_lo", "iou_strict_fixed_hi", "iou_strict", "iou_strict_lo", "iou_strict_hi", "acc_at_05",
                 "rsna_map", "iou_lenient", "lenient_kept", "parsable_share", "malformed_share")


def _ci(m: dict, key: str) -> str:
    return f"{m[key]:.3f} [{m[key + '_lo']:.3f}, {m[key + '_hi']:.3f}]"


def headline(evaluation: common.Evaluation) -> str:
    """One line for the end of the run: strict IoU beside the controls, and the paper's lenient IoU."""
    model, shuffled, prior = evaluation.metrics, evaluation.shuffled, evaluation.prior
    key = "iou_strict_variable" if "iou_strict_variable" in model else "iou_strict"
    return (f"on {evaluation.split}: strict IoU on position-variable findings {_ci(model, key)} vs image-shuffled {shuffled[key]:.3f} and label "
            f"prior {prior[key]:.3f}; all findings {model['iou_strict']:.3f}; the paper's lenient IoU {model['iou_lenient']:.3f}")


def what_to_notice(evaluation: common.Evaluation) -> str:
    """The notebook's closing remarks for one run, each computed from the numbers in its table: how far the
    model is from each control on both kinds of finding (with the intervals of one run, overlapping or not),
    and how the lenient IoU relates to the strict one here."""
    model, shuffled, prior = evaluation.metrics, evaluation.shuffled, evaluation.prior
    lines = []
    for pos, what in (("variable", "position-variable findings, where the image must say where"),
                      ("fixed", "position-fixed findings, where the label already says where")):
        key = f"iou_strict_{pos}"
        if key not in model:
            continue
        parts = []
        for name, other in (("the label prior", prior), ("the image-shuffled control", shuffled)):
            d = model[key] - other[key]
            apart = model[key + "_lo"] > other[key + "_hi"] or model[key + "_hi"] < other[key + "_lo"]
            parts.append(f"{'+' if d >= 0 else ''}{d:.3f} against {name} ({other[key]:.3f}; the intervals "
                         f"{'do not overlap' if apart else 'overlap'})")
        lines.append(f"- On {what}: strict IoU {_ci(model, key)}, " + " and ".join(parts) + ".")
    # With a reference box for every finding it cannot fall below the strict mean: a kept answer's best-match
    # mean is at least its matched share, and the dropped answers score 0 under the strict rule.
    gap = model["iou_lenient"] - model["iou_strict"]
    lines.append(f"- The paper's lenient IoU is {model['iou_lenient']:.3f}, {abs(gap):.3f} {'above' if gap >= 0 else 'below'} "
                 f"the strict {model['iou_strict']:.3f}: it dropped {model['findings'] - model['lenient_kept']} of "
                 f"{model['findings']} answers (no parsable box) and charges nothing for a missing or extra box.")
    lines.append(f"- One run's intervals resample {evaluation.split} studies only; whether the model beats the controls across seeds "
                 "is the aggregated verdict's question (`results/minigpt_med/tiny/verdict.md`, below).")
    return "\n".join(lines)


