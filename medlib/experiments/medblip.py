"""What notebook 01 calls: MedBLIP's data, model, training and scoring for one ablation arm,
and the aggregation of all arms into tables and figures."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, BlipImageProcessor

from medlib import resources
from medlib.data.loaders import PaperImages, diff_vqa_by_study
from medlib.data.synthcxr import augment_question, build, testbed_vqa
from medlib.experiments import common, probes
from medlib.experiments.priors import question_prior
from medlib.metrics.vqa import QUESTION_TYPES, answer_concentration, presence_by_finding, score
from medlib.models import medblip
from medlib.models.common import (
    RANDOM_WEIGHTS,
    answer_tokens,
    blip_image_processor,
    build_random,
    frozen_to_bf16,
    images_to_tensor,
    load_tokenizer,
    mixed_precision,
    pad_sequences,
    with_tokenizer_ids,
)
from medlib.params import ParameterError, require_paths
from medlib.paths import weights_fingerprint
from medlib.profiles import get_profile
from medlib.train import TrainConfig, train
from medlib.zoo import build_tokenizer, local_tokenizer
from medlib.zoo.medblip import build_medblip_zoo, load_zoo

# Training batches: each run of 8 shuffled batches sorted by length (`train.epoch_order`), so a batch pads
# about 5 % of its tokens instead of 25 % (the tiny arm trained in 37 s instead of 40 s).
LENGTH_GROUPS = 8


build_zoo = build_medblip_zoo  # built once before a sweep's parallel arms start (Experiment.prepare_tiny)


def check_parameters(p: dict, origin: str) -> None:
    """What a MedBLIP arm would refuse later (the ratio's whole layers are the parameter's step)."""
    if p["profile"] == "paper":
        require_paths(p, {"diff_vqa_csv": "file", "mimic_jpg_root": "dir"}, origin)
    if p.get("zoo_seed") and p["profile"] != "tiny":
        raise ParameterError(f"{origin}: zoo_seed picks a build of the tiny zoo; the {p['profile']} profile has none")
    if p["profile"] != "paper":  # the tiny OPT has TINY_OPT_LAYERS layers, OPT-2.7B 32 (the parameter's step)
        try:
            medblip.unfrozen_layers(p["unfreeze_ratio"], medblip.TINY_OPT_LAYERS)
        except ValueError as err:
            raise ParameterError(f"{origin}: unfreeze_ratio on the {p['profile']} profile: {err}") from None
    if p["conv_stem"] and p["profile"] == "paper":
        raise ParameterError(f"{origin}: conv_stem replaces a 16 px patch embedding; BLIP-2's ViT-g uses 14 px patches")


def load_data(profile: str, augment: bool, seed: int, diff_vqa_csv: str = "", mimic_jpg_root: str = "", checkpoint: str = "") -> common.ExperimentData:
    """`ExperimentData` (images, train, test and validation pairs); augmentation only on train. tiny / smoke:
    the testbed's VQA sets of SynthCXR-IU (`synthcxr.testbed_vqa`: every study of each split, presence
    balanced per finding, the same questions whatever `seed`); paper: Medical-Diff-VQA's CSV with
    MIMIC-CXR-JPG images, split by study (`loaders.diff_vqa_by_study`)."""
    prof = get_profile(profile)
    if profile == "paper":
        resources.check_paper_resources("medblip")  # stop now, with an estimate, if this machine cannot run it
        if not diff_vqa_csv or not mimic_jpg_root:
            raise ValueError("the paper profile reads Medical-Diff-VQA: set diff_vqa_csv= and mimic_jpg_root=")
        checkpoint = checkpoint or medblip.PAPER_CHECKPOINT
        processor = blip_image_processor() if checkpoint == RANDOM_WEIGHTS else BlipImageProcessor.from_pretrained(checkpoint)
        # MedBLIP's six question types: "difference" questions need a second, reference image
        images, parts = diff_vqa_by_study(diff_vqa_csv, mimic_jpg_root, QUESTION_TYPES, processor, PAPER_SPLIT, "medblip")
        train = parts["train"] + ([a for q in parts["train"] for a in augment_question(q)] if augment else [])
        return common.ExperimentData(images, train, parts["test"], val=parts["val"])
    ds = build(image_size=prof.image_size, limit=prof.data_limit, progress=False)
    # Whole splits: the testbed trains on all of train, chooses on all of validation, reports all of test.
    train, val, test = (testbed_vqa(ds.split(name), seed=k) for k, name in enumerate(("train", "val", "test")))
    if augment:
        train += [a for q in list(train) for a in augment_question(q)]
    index = {s.uid: s.index for s in ds.studies}
    for q in train + val + test:
        q["image_index"] = index[q["study"]]
    return common.ExperimentData(ds, train, test, val=val)


PAPER_SPLIT = {"train": 0.70, "val": 0.15, "test": 0.15}  # by study (MedBLIP split rows at random, which put the
# same image in training and test)


def pixels(ds, indices, blank: bool = False) -> torch.Tensor:
    """The images at `indices` as the vision encoder's input; `blank`: black images instead."""
    if isinstance(ds, PaperImages):
        return ds.pixel_values(indices, blank)
    imgs = ds.images[indices]
    return images_to_tensor(np.zeros_like(imgs) if blank else imgs)


def load_model(profile: str, unfreeze_ratio: float, conv_stem: bool, checkpoint: str = "", zoo_seed: int = 0):
    """(model, tokenizer, trainable-set summary). smoke: random weights; tiny: the zoo (build `zoo_seed`)."""
    prof = get_profile(profile)
    if profile == "paper":
        resources.check_paper_resources("medblip")  # stop now, with an estimate, if this machine cannot run it

        if checkpoint == RANDOM_WEIGHTS:
            tok = local_tokenizer()
            config = medblip.paper_config()
            with_tokenizer_ids(config.text_config, tok)
            config.image_token_index = tok.convert_tokens_to_ids("<image>")
            model = build_random(medblip.Blip2ForConditionalGeneration, config)
        else:
            model = medblip.build(None, checkpoint or medblip.PAPER_CHECKPOINT)
            tok = AutoTokenizer.from_pretrained(checkpoint or medblip.PAPER_CHECKPOINT)
    elif prof.pretrained:
        root, _ = load_zoo(prof.image_size, zoo_seed)
        tok = load_tokenizer(root / "tokenizer")
        model = medblip.Blip2ForConditionalGeneration.from_pretrained(str(root / "medblip"))
    else:
        ds = build(image_size=prof.image_size, limit=prof.data_limit, progress=False)
        tok = build_tokenizer(ds.split("pretrain") + ds.split("train"))
        model = medblip.build(medblip.tiny_config(len(tok), prof.image_size, tok.convert_tokens_to_ids("<image>"),
                                                  tok.pad_token_id, tok.bos_token_id, tok.eos_token_id))
    if conv_stem:
        medblip.add_conv_stem(model)
    summary = medblip.set_trainable(model, unfreeze_ratio)
    model.eval()
    return model, tok, summary


def place(model, device: torch.device):
    """Move the model to `device`; on a GPU set `gpu_dtypes`."""
    model.to(device)
    return gpu_dtypes(model) if torch.device(device).type == "cuda" else model


def gpu_dtypes(model):
    """Frozen weights in bf16, trainable ones (fc1 / fc2, the Q-Former's query branch) in fp32 for the
    optimizer. With the conv stem training, the ViT stays fp32: the stem's output runs through it."""
    stem_trains = any(p.requires_grad for p in model.vision_model.embeddings.patch_embedding.parameters())
    return frozen_to_bf16(model, keep=(model.vision_model,) if stem_trains else ())


def encode(samples, tok, num_query_tokens: int, image_token_id: int, with_answer: bool):
    """Token ids: Q image placeholders, <s>, the prompt, then (for training) the answer and </s>.
    Labels cover the answer tokens only."""
    out = []
    for s in samples:
        prompt = [image_token_id] * num_query_tokens + [tok.bos_token_id] + tok(medblip.PROMPT.format(question=s["question"]),
                                                                                 add_special_tokens=False)["input_ids"]
        answer = tok(" " + s["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] if with_answer else []
        out.append({**s, "input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return out


def image_features(model, ds, indices, use_blank: bool = False, batch_size: int = 64) -> dict[int, torch.Tensor]:
    """Frozen ViT features per image, computed once (the ViT never trains in MedBLIP)."""
    feats = {}
    indices = sorted(set(indices))
    with torch.no_grad(), mixed_precision(model):
        for i in range(0, len(indices), batch_size):
            chunk = indices[i:i + batch_size]
            px = pixels(ds, chunk, use_blank).to(model.device, model.dtype)
            out = model.vision_model(pixel_values=px).last_hidden_state.cpu()
            feats.update(zip(chunk, out))
    return feats


def cached_features(model, ds, indices, model_key: str) -> dict[int, torch.Tensor]:
    """`image_features`, kept on disk under (model, data) so every arm of a sweep reuses them."""
    return common.cached_features((model_key, weights_fingerprint(model.vision_model), ds.fingerprint), indices,
                                  lambda idx: image_features(model, ds, idx))


def collate(batch, feats, pad_id: int, pixel_fn=None):
    ids, mask = pad_sequences([b["input_ids"] for b in batch], pad_id)
    labels, _ = pad_sequences([b["labels"] for b in batch], -100)
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels, "image_index": [b["image_index"] for b in batch]}
    if feats is not None:
        out["features"] = torch.stack([feats[b["image_index"]] for b in batch])
    return out


def make_loss(ds, conv_stem: bool):
    def loss_fn(model, batch):
        dev = model.device
        if conv_stem:  # the stem trains, so the ViT runs every step
            feats = model.vision_model(pixel_values=pixels(ds, batch["image_index"]).to(dev, model.dtype)).last_hidden_state
        else:
            feats = batch["features"].to(dev)
        loss = medblip.lm_loss(model, feats, batch["input_ids"].to(dev), batch["attention_mask"].to(dev), batch["labels"].to(dev))
        return loss, answer_tokens(batch["labels"])  # a mean over answer tokens
    return loss_fn


CHECKS_PER_EPOCH = 2  # early stopping's validation checks


def steps_per_epoch(num_pairs: int, batch_size: int) -> int:
    return math.ceil(num_pairs / batch_size)


def validation_loss(model, encoded: list[dict], collate_fn, loss_fn, batch_size: int = 128) -> float:
    """Mean answer-token loss over `encoded` validation pairs (what early stopping watches)."""
    total, tokens = 0.0, 0
    with mixed_precision(model):
        for i in range(0, len(encoded), batch_size):
            loss, n = loss_fn(model, collate_fn(encoded[i:i + batch_size]))
            total, tokens = total + float(loss) * int(n), tokens + int(n)
    return total / max(tokens, 1)


def fit(model, tok, ds, train_qa: list[dict], val_qa: list[dict], feats, conv_stem: bool, config: TrainConfig, device,
        checkpoint_path) -> tuple:
    """Fine-tune on `train_qa` in batches of about one length; with `config.patience`, early stopping on the loss of
    `val_qa`, checked twice an epoch. `feats`: the frozen ViT's features (None with the conv stem, which trains, so
    the ViT runs every step). Returns (the model, `train`'s history: loss curve, validation checks, the kept step)."""
    train_enc, val_enc = (encode(qa, tok, model.config.num_query_tokens, model.config.image_token_id, with_answer=True)
                          for qa in (train_qa, val_qa))
    loss_fn = make_loss(ds, conv_stem)

    def collate_fn(batch):
        return collate(batch, feats, tok.pad_token_id)

    # optimizer steps between two validation checks of early stopping
    checks = max(1, math.ceil(steps_per_epoch(len(train_enc), config.batch_size) / CHECKS_PER_EPOCH))
    config = replace(config, length_groups=LENGTH_GROUPS, validate_every=checks)
    history = train(model, train_enc, collate_fn, loss_fn, config, device=device, checkpoint_path=checkpoint_path,
                    lengths=[len(e["input_ids"]) for e in train_enc],
                    validate=(lambda m: validation_loss(m, val_enc, collate_fn, loss_fn)) if val_enc and config.patience else None)
    return model, history


def answer(model, tok, ds, samples, feats=None, max_new_tokens: int = 10, batch_size: int = 64, blank: bool = False) -> list[str]:
    """Greedy answers. Stops on </s>, on the pad token and on a newline, as MedBLIP's model
    learnt to end answers with either."""
    enc = encode(samples, tok, model.config.num_query_tokens, model.config.image_token_id, with_answer=False)
    stop = [tok.eos_token_id, tok.pad_token_id] + [i for i in [tok.convert_tokens_to_ids("Ċ")] if i not in (None, tok.unk_token_id)]
    # Batched by question type and prompt length, answers returned in the samples' order: a batch pads
    # little, and ends as soon as its (similar) answers have, not with the longest answer of any type.
    order = sorted(range(len(enc)), key=lambda k: (enc[k].get("question_type", ""), len(enc[k]["input_ids"])))
    enc = [enc[k] for k in order]
    outs = []
    for i in tqdm(range(0, len(enc), batch_size), desc="answering", unit="batch", mininterval=1.0):
        chunk = enc[i:i + batch_size]
        ids, mask = pad_sequences([c["input_ids"] for c in chunk], tok.pad_token_id, side="left")
        idx = [c["image_index"] for c in chunk]
        with torch.no_grad(), mixed_precision(model):
            if feats is not None and not blank:
                f = torch.stack([feats[k] for k in idx])
            else:
                f = model.vision_model(pixel_values=pixels(ds, idx, blank).to(model.device, model.dtype)).last_hidden_state
            gen = medblip.generate(model, f.to(model.device), ids.to(model.device), mask.to(model.device), max_new_tokens, stop)
        outs += [t.split("\n")[0].strip() for t in tok.batch_decode(gen, skip_special_tokens=True)]
    answers = [""] * len(outs)
    for k, text in zip(order, outs):
        answers[k] = text
    return answers


def evaluate(model, tok, data: common.ExperimentData, split: str, feats, max_new_tokens: int) -> common.Evaluation:
    """The model on the questions of `split` (test, or validation), its image-shuffled control and the
    question-string prior on the same questions, and the model on validation. A test row of the arm's files
    carries the control's and the prior's scores, and the control's answer. `detail`: accuracy on "is there X?" per
    finding, model beside control (`presence`), each question type's most common answer (`concentration`), ROUGE-L
    per question type (`per_type`) and five answers of each type (`examples`)."""
    report_qa, val_qa = data.reported(split), data.val

    def answered(qa):
        predictions = answer(model, tok, data.images, qa, feats, max_new_tokens)
        return (predictions, *score(predictions, qa))

    preds, metrics, per = answered(report_qa)
    shuffled_qa = common.image_shuffled(report_qa)
    shuffled_preds, shuffled_metrics, shuffled_per = answered(shuffled_qa)
    prior_metrics, prior_per = score(question_prior(data.train, report_qa), report_qa)
    val_preds, val_metrics, val_per = ((preds, metrics, per) if split == "val" else answered(val_qa) if val_qa else ([], {}, {}))
    parts = [("val", val_qa, val_per, val_preds, None, None, [""] * len(val_qa))] if split == "test" and val_qa else []
    parts.append((split, report_qa, per, preds, shuffled_per, prior_per, shuffled_preds))
    items, rows, answers = [], [], []
    for name, qa, scores, predictions, shuffled, prior, shuffled_predictions in parts:
        items.append(pd.DataFrame(qa)[["study", "question_type", "question", "answer"]].assign(split=name))
        rows.append(score_rows(name, scores, shuffled, prior))
        answers.append(pd.DataFrame({"split": name, "item": range(len(qa)), "study": [q["study"] for q in qa],
                                     "prediction": predictions, "shuffled_prediction": shuffled_predictions}))
    presence = presence_by_finding(report_qa, per["exact_match"]).merge(
        presence_by_finding(shuffled_qa, shuffled_per["exact_match"])[["finding", "accuracy"]].rename(columns={"accuracy": "shuffled"}),
        on="finding", how="left")
    per_type = pd.Series({qt: metrics.get(f"rougeL_{qt}") for qt in QUESTION_TYPES}, name="rougeL").dropna()
    return common.Evaluation(split, metrics, shuffled_metrics, prior_metrics, val_metrics, pd.concat(items), pd.concat(rows),
                             pd.concat(answers), preds,
                             {"presence": presence, "concentration": answer_concentration(preds, report_qa),
                              "per_type": per_type.rename_axis("question_type").reset_index(), "examples":
                              pd.DataFrame(report_qa)[["question_type", "question", "answer"]].assign(prediction=preds)
                              .groupby("question_type").head(5)})


TABLE_COLUMNS = ("rougeL", "rougeL_lo", "rougeL_hi", "rouge1", "rouge2", "bleu1", "bleu4", "closed_accuracy", "closed_accuracy_lo",
                 "closed_accuracy_hi", "exact_match")


def table(evaluation: common.Evaluation) -> pd.DataFrame:
    """The arm's metrics table: one row per system (the model, its image-shuffled control, the prior)."""
    return pd.DataFrame({name: {k: m[k] for k in TABLE_COLUMNS} for name, m in
                         [("model", evaluation.metrics), ("image-shuffled control", evaluation.shuffled),
                          ("question-string prior", evaluation.prior)]}).T


def headline(evaluation: common.Evaluation) -> str:
    """One line for the end of the run: the model beside its two controls, on the reported split."""
    m, s, p = evaluation.metrics, evaluation.shuffled, evaluation.prior
    return (f"on {evaluation.split}: ROUGE-L {m['rougeL']:.3f} [{m['rougeL_lo']:.3f}, {m['rougeL_hi']:.3f}]; "
            f"image-shuffled {s['rougeL']:.3f}; question prior {p['rougeL']:.3f}")


def record(evaluation: common.Evaluation, history: dict, trainable: dict, data: common.ExperimentData, lr: float,
           batch_size: int) -> dict:
    """What run.json keeps of the arm beside its parameters (`Run.finish`): what the aggregation reads."""
    return {"metrics": {**evaluation.metrics, "split": evaluation.split, "image_shuffled": evaluation.shuffled,
                        "question_prior": evaluation.prior, "val": common.point_estimates(evaluation.val)},
            "loss_curve": history["loss_curve"], "val_curve": history["val_curve"], "best_step": history["best_step"],
            "steps_per_epoch": steps_per_epoch(len(data.train), batch_size), "train_seconds": history.get("train_seconds"),
            "trainable_params": trainable["trainable_params"], "total_params": trainable["total_params"],
            "unfrozen_layers": trainable["unfrozen_layers"], "num_train_pairs": len(data.train), "num_val_pairs": len(data.val),
            "num_test_pairs": len(data.test), "lr": lr, "batch_size": batch_size}


def probe_encoder(feats: dict, ds, train: list[dict], val: list[dict]):
    """`probes.mean_token_probe` on the frozen ViT's patch tokens (its CLS token left out), per finding."""
    return probes.mean_token_probe(feats, ds, train, val, skip_first=True)


def score_rows(split: str, model: dict, shuffled: dict | None = None, prior: dict | None = None, digits: int = 4):
    """One row per question of `split`: the model's ROUGE-L and exact match, and on test the image-shuffled
    control's and the question-string prior's (empty on validation). Rounded: thousands of rows per arm."""
    out = {"split": split}
    for prefix, per in (("", model), ("shuffled_", shuffled), ("prior_", prior)):
        for k in ("rougeL", "exact_match"):
            out[prefix + k] = np.round(per[k], digits) if per else np.nan
    return pd.DataFrame(out, index=range(len(model.get("rougeL", []))))


def what_to_notice(evaluation: common.Evaluation, history: dict, trainable: dict, steps_per_epoch: int) -> str:
    """The notebook's closing remarks for one run, each computed from its numbers: what trained, what ended
    training, how far the model is from each control (one run's intervals, overlapping or not), and the question
    types that got one answer for every image."""
    metrics, shuffled, prior, split = evaluation.metrics, evaluation.shuffled, evaluation.prior, evaluation.split
    concentration = evaluation.detail["concentration"]
    lines = [f"- This run trained {trainable['trainable_params']:,} of {trainable['total_params']:,} parameters: "
             f"fc1 / fc2 of OPT layers {trainable['unfrozen_layers'] or 'none'} (Q-Former and projection besides)."]
    if history.get("val_curve"):
        last, best = history["val_curve"][-1][0], history["best_step"]
        lines.append(f"- Early stopping kept step {best} (epoch {best / steps_per_epoch:.1f}) of {last} trained: "
                     + ("its last check was its lowest validation loss, so the budget, not a plateau, ended training."
                        if best == last else "validation loss had stopped falling before the budget ran out."))
    for key, what in (("rougeL", "ROUGE-L"), ("closed_accuracy", "closed (yes / no) accuracy")):
        parts = []
        for name, other in (("the image-shuffled control", shuffled), ("the question-string prior", prior)):
            d = metrics[key] - other[key]
            apart = metrics[key + "_lo"] > other[key + "_hi"] or metrics[key + "_hi"] < other[key + "_lo"]
            parts.append(f"{d:+.3f} against {name} ({other[key]:.3f}; the intervals {'do not overlap' if apart else 'overlap'})")
        lines.append(f"- {what} on {split}: {metrics[key]:.3f} [{metrics[key + '_lo']:.3f}, {metrics[key + '_hi']:.3f}], "
                     + " and ".join(parts) + ".")
    single = concentration[concentration.distinct_predictions == 1]
    def quoted(answer):
        return f'"{answer}"' if answer else "the empty answer"

    said = [f"{r.question_type} ({quoted(r.top_prediction)}; the references have {r.distinct_references} answers)"
            for r in single.itertuples()]
    lines.append("- One answer for every image: " + (", ".join(said) or "no question type") + ".")
    lines.append("- One run's intervals resample studies only; whether the ratios differ across seeds and zoo builds "
                 "is the verdict's question (`results/medblip/tiny/claim.md`, above).")
    return "\n".join(lines)
