"""What notebook 02 calls: ClinicalBLIP's data, model, staged LoRA training, report generation and
scoring for one arm, and the aggregation of all arms into tables and figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import InstructBlipProcessor

from medlib import resources
from medlib.data.iu_xray import clean_report, truncate_tokens
from medlib.data.loaders import check_images, r2gen_annotation
from medlib.data.synthcxr import build
from medlib.experiments import common, probes
from medlib.experiments.priors import (
    MAX_REPORT_TOKENS,
    findings_first,
)
from medlib.metrics.clinical import (
    label_matrix,
)
from medlib.metrics.report_generation import PER_REPORT_SCORES, label_strings, score, score_labels
from medlib.models import clinicalblip as cb
from medlib.models.common import (
    RANDOM_WEIGHTS,
    answer_tokens,
    blip_image_processor,
    build_random,
    count_parameters,
    images_to_tensor,
    load_tokenizer,
    pad_sequences,
    with_tokenizer_ids,
)
from medlib.params import ParameterError, require_paths
from medlib.profiles import get_profile
from medlib.train import TrainConfig, train
from medlib.zoo import build_tokenizer, local_tokenizer
from medlib.zoo.clinicalblip import build_clinicalblip_zoo

REPORT_ORDERS = ("findings-first", "as-written")
# The decoding settings an arm chooses from on validation (num_beams, repetition_penalty), by abnormal-only
# CE-F1. Beam search finds the most probable report, and on IU X-Ray that is the normal one: measured on the
# oracle-leak arm, beam 3 named a finding in 2 % of validation reports and greedy decoding in 39 %. HF's
# repetition penalty also counts the prompt, so it penalises the very findings a prior names.
DECODINGS = ((1, 1.0), (3, 1.2))


build_zoo = build_clinicalblip_zoo  # built once before a sweep's parallel arms start (Experiment.prepare_tiny)


def check_parameters(p: dict, origin: str) -> None:
    """What a ClinicalBLIP arm would refuse later."""
    if p["stages"] == "stage1+2" and p["epochs_stage1"] >= p["epochs"]:
        raise ParameterError(f"{origin}: epochs_stage1 {p['epochs_stage1']} leaves stage 2 nothing of the budget of "
                             f"epochs {p['epochs']}; stage1+2 needs epochs_stage1 < epochs")
    if p.get("zoo_seed") and p["profile"] != "tiny":
        raise ParameterError(f"{origin}: zoo_seed picks a build of the tiny zoo; the {p['profile']} profile has none")
    if p["profile"] == "paper":
        require_paths(p, {"annotation": "file", "image_root": "dir"}, origin)
        if p["batch_size"] and p["batch_size"] % micro_batch("paper", p["batch_size"]):
            raise ParameterError(f"{origin}: batch_size {p['batch_size']} is not a whole number of micro-batches of "
                                 f"{PAPER_MICRO_BATCH} (the paper profile's forward pass)")


def load_data(profile: str, dataset: str = "iu_xray", annotation: str = "", image_root: str = "", max_train: int = 0,
              report_order: str = "findings-first") -> common.ExperimentData:
    """`ExperimentData`: SynthCXR-IU (None on the paper profile) and the train, validation and test samples.
    A sample is a dict: id and study (the same), reference (the R2Gen-cleaned report cut to 60 / 100 tokens),
    target (what training teaches: the reference, or with `report_order="findings-first"` its sentences that
    name a finding first, cut after reordering), indication, tags, and image_index (SynthCXR-IU) or image_path
    (the paper profile's R2Gen layout; IU X-Ray's first, frontal, image). smoke / tiny: whole splits;
    `max_train` > 0 caps the training reports."""
    if dataset not in MAX_REPORT_TOKENS:
        raise ValueError(f"dataset must be one of {', '.join(MAX_REPORT_TOKENS)}; got {dataset!r}")
    if report_order not in REPORT_ORDERS:
        raise ValueError(f"report_order must be one of {', '.join(REPORT_ORDERS)}; got {report_order!r}")
    limit = MAX_REPORT_TOKENS[dataset]

    def sample(uid, full, **rest):
        target = findings_first(full) if report_order == "findings-first" else full
        return {"id": uid, "study": uid, "reference": truncate_tokens(full, limit), "target": truncate_tokens(target, limit), **rest}

    if profile == "paper":
        resources.check_paper_resources("clinicalblip")  # stop now, with an estimate, if this machine cannot run it
        if not annotation or not image_root:
            raise ValueError("the paper profile reads R2Gen's annotation.json: set annotation= and image_root=")
        splits = [[sample(s.id, s.report, indication="", tags=[], image_path=str(s.image_paths[0]))
                   for s in r2gen_annotation(annotation, image_root, split, dataset)] for split in ("train", "val", "test")]
        check_images([s["image_path"] for part in splits for s in part], annotation)  # before the model loads
        return common.ExperimentData(None, splits[0][:max_train or None], splits[2], val=splits[1])
    prof = get_profile(profile)
    ds = build(image_size=prof.image_size, limit=prof.data_limit, progress=False)

    def samples(split):
        return [sample(s.uid, s.report_clean, image_index=s.index, indication=s.indication, tags=s.tags)
                for s in ds.split(split) if s.report_clean]

    return common.ExperimentData(ds, samples("train")[:max_train or None], samples("test"), val=samples("val"))


def prompts(samples: list[dict], prior: str) -> list[str]:
    return [cb.prompt(s["indication"], prior, s["tags"]) for s in samples]


def load_model(profile: str, checkpoint: str = "", ds=None, zoo_seed: int = 0):
    """(model, `cb.Processors` (LLM tokenizer, Q-Former tokenizer, image processor or None), trainable-set
    summary: nothing trains until a stage starts). smoke: random weights; tiny: the zoo's InstructBLIP (build
    `zoo_seed`); paper: `checkpoint` (hub name or local folder)."""
    model, *parts = _load(profile, checkpoint, ds, zoo_seed)
    model.requires_grad_(False)  # each stage (`cb.start_stage`) says what trains
    return model, cb.Processors(*parts), count_parameters(model)


def _load(profile: str, checkpoint: str, ds, zoo_seed: int = 0):
    prof = get_profile(profile)
    if profile == "paper":
        if checkpoint == RANDOM_WEIGHTS:
            tok = local_tokenizer()  # serves the LLM and the Q-Former (both vocabularies are larger)
            config = cb.paper_config()
            with_tokenizer_ids(config.text_config, tok)
            config.qformer_config.pad_token_id = tok.pad_token_id
            config.image_token_index = tok.convert_tokens_to_ids("<image>")
            return build_random(cb.InstructBlipForConditionalGeneration, config, torch.bfloat16), tok, tok, blip_image_processor()
        name = checkpoint or cb.PAPER_CHECKPOINT
        proc = InstructBlipProcessor.from_pretrained(name)
        model = cb.build(None, name, dtype=torch.bfloat16)
        for t in (proc.tokenizer, proc.qformer_tokenizer):
            if t.pad_token is None:  # LLaMA-family tokenizers ship without one; batches need it
                t.pad_token = t.unk_token or t.eos_token
        return model, proc.tokenizer, proc.qformer_tokenizer, proc.image_processor
    if prof.pretrained:
        root = build_clinicalblip_zoo(image_size=prof.image_size, zoo_seed=zoo_seed)
        tok = load_tokenizer(root.parent / "tokenizer")
        model = cb.InstructBlipForConditionalGeneration.from_pretrained(str(root / "instructblip"))
    else:
        tok = build_tokenizer(ds.split("pretrain") + ds.split("train"))
        model = cb.build(cb.tiny_config(len(tok), prof.image_size, tok.convert_tokens_to_ids("<image>"), tok.pad_token_id,
                                        tok.bos_token_id, tok.eos_token_id))
    model.requires_grad_(False)
    model.eval()
    return model, tok, tok, None


def pixels(samples: list[dict], ds=None, image_processor=None) -> torch.Tensor:
    """The images of `samples` as the vision encoder's input."""
    if "image_index" in samples[0]:
        return images_to_tensor(ds.images[[s["image_index"] for s in samples]])
    imgs = []
    for s in samples:
        try:
            imgs.append(Image.open(s["image_path"]).convert("RGB"))
        except OSError as err:
            raise ValueError(f"{s['image_path']}: not a readable image ({err})") from err
    return image_processor(images=imgs, return_tensors="pt")["pixel_values"]


def encode(samples: list[dict], prompt_texts: list[str], tok, qformer_tok, num_query_tokens: int, image_token_id: int,
           max_prompt: int = 96, max_target: int = 128) -> list[dict]:
    """LLM ids: Q image placeholders, <s>, the prompt, the report, </s>; loss on the report only.
    The Q-Former reads the prompt too (InstructBLIP's instruction-aware queries)."""
    out = []
    for s, p in zip(samples, prompt_texts):
        head = [image_token_id] * num_query_tokens + [tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"][:max_prompt]
        target = tok(" " + s.get("target", s["reference"]), add_special_tokens=False)["input_ids"][:max_target] + [tok.eos_token_id]
        out.append({**s, "input_ids": head + target, "labels": [-100] * len(head) + target,
                    "qformer_input_ids": qformer_tok(p, truncation=True, max_length=max_prompt)["input_ids"]})
    return out


def collate(batch: list[dict], pad_id: int, qformer_pad_id: int, pixel_fn) -> dict:
    ids, mask = pad_sequences([b["input_ids"] for b in batch], pad_id)
    q, qmask = pad_sequences([b["qformer_input_ids"] for b in batch], qformer_pad_id)
    return {"pixel_values": pixel_fn(batch), "input_ids": ids, "labels": pad_sequences([b["labels"] for b in batch], -100)[0],
            "attention_mask": mask, "qformer_input_ids": q, "qformer_attention_mask": qmask}


def loss_fn(model, batch):
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    b = {k: v.to(dev) for k, v in batch.items()}
    b["pixel_values"] = b["pixel_values"].to(dtype)
    return model(**b).loss, answer_tokens(b["labels"])  # HF's loss: a mean over the report tokens


# On the paper profile a batch of 128 reports (InstructBLIP's recipe) is reached by accumulating
# micro-batches of this size: 128 reports of a 7B model at once do not fit one GPU.
PAPER_MICRO_BATCH = 4


def micro_batch(profile: str, batch_size: int) -> int:
    """The reports one forward pass takes: the whole batch on CPU profiles, `PAPER_MICRO_BATCH` on a GPU."""
    return min(batch_size, PAPER_MICRO_BATCH) if profile == "paper" else batch_size


def stage_epochs(stages: str, epochs: int, epochs_stage1: int) -> dict:
    """{stage: passes} for an arm: every arm trains `epochs` passes, so the stage comparison is at one budget of
    optimizer steps; stage1+2 gives `epochs_stage1` of them to stage 1 and the rest to stage 2."""
    if stages == "stage1+2":
        return {"stage1": epochs_stage1, "stage2": epochs - epochs_stage1}
    return {stage: epochs for stage in cb.STAGE_PLAN[stages]}


def fit(model, stages: str, samples: list[dict], collate_fn, epochs: dict, lr: float | dict, batch_size: int, seed: int,
                 lora: dict, device, micro_batch: int | None = None) -> tuple:
    """Run the arm's stages in order (`cb.STAGE_PLAN`): each wraps the model with its LoRA, trains,
    and merges. `lr`: one peak learning rate, or one per stage ({stage: lr}). `batch_size` reports per
    optimizer step, in forward passes of `micro_batch` (a divisor; default the whole batch). Returns
    (model, history: {"stages": one record per stage: trainable set, learning rate, loss curve, seconds})."""
    micro = micro_batch or batch_size
    if batch_size % micro:
        raise ValueError(f"batch_size {batch_size} is not a whole number of micro-batches of {micro}")
    if stages not in cb.STAGE_PLAN:
        raise ValueError(f"stages must be one of {', '.join(cb.STAGE_PLAN)}; got {stages!r}")
    records = []
    for stage in cb.STAGE_PLAN[stages]:
        peft_model, summary = cb.start_stage(model, stage, **lora)
        stage_lr = lr[stage] if isinstance(lr, dict) else lr
        cfg = TrainConfig(num_epochs=epochs[stage], lr=stage_lr, batch_size=micro, grad_accum=batch_size // micro, seed=seed,
                          desc=f"ClinicalBLIP {stage}")
        history = train(peft_model, samples, collate_fn, loss_fn, cfg, device=device)
        model = cb.end_stage(peft_model)
        records.append({**summary, "epochs": epochs[stage], "lr": stage_lr, "loss_curve": history["loss_curve"],
                        "train_seconds": history.get("train_seconds")})
    model.eval()
    return model, {"stages": records}


@torch.no_grad()
def generate_reports(model, tok, qformer_tok, samples: list[dict], prompt_texts: list[str], pixel_fn, num_beams: int = 3,
                     max_new_tokens: int = 80, repetition_penalty: float = 1.2, batch_size: int = 32) -> list[str]:
    """Beam-search reports, cleaned as the references are (R2Gen's cleaning), so both are compared in one form."""
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out = []
    for i in tqdm(range(0, len(samples), batch_size), desc="writing reports", unit="batch", mininterval=1.0):
        chunk, chunk_prompts = samples[i:i + batch_size], prompt_texts[i:i + batch_size]
        inputs = cb.generation_inputs(tok, qformer_tok, chunk_prompts, model.config.num_query_tokens, model.config.image_token_id)
        inputs = {k: v.to(dev) for k, v in inputs.items()}
        gen = model.generate(pixel_values=pixel_fn(chunk).to(dev, dtype), **inputs, num_beams=num_beams, do_sample=False,
                             max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = gen[:, inputs["input_ids"].shape[1]:]  # generate returns the prompt too
        out += [clean_report(t) for t in tok.batch_decode(new, skip_special_tokens=True)]
    return out


def choose_decoding(model, tok, qformer_tok, val: list[dict], val_prompts: list[str], pixel_fn, max_new_tokens: int,
                    candidates=DECODINGS) -> tuple[tuple[int, float], list[dict], list[str]]:
    """The decoding settings (num_beams, repetition_penalty) of `candidates` whose validation reports have the
    highest abnormal-only CE micro-F1 (the first on a tie). Returns (choice, one row per candidate, the
    chosen candidate's validation reports)."""
    refs = [s["reference"] for s in val]
    rows, reports = [], {}
    for beams, penalty in candidates:
        preds = generate_reports(model, tok, qformer_tok, val, val_prompts, pixel_fn, beams, max_new_tokens, penalty)
        clinical, _ = score_labels(preds, refs)
        reports[beams, penalty] = preds
        rows.append({"num_beams": beams, "repetition_penalty": penalty, "val_ce13_micro_f1": clinical["ce13_micro_f1"],
                     "val_abnormal_share": clinical["abnormal_share"], "val_distinct_reports": len(set(preds))})
    best = max(range(len(rows)), key=lambda i: (rows[i]["val_ce13_micro_f1"], -i))
    choice = (rows[best]["num_beams"], rows[best]["repetition_penalty"])
    return choice, rows, reports[choice]


def score_rows(split: str, condition: str, per: dict, digits: int = 4):
    """One row per report of `split` written under `condition` (the model, the image-shuffled control, a
    baseline): its per-report scores and its labels, in the order of the arm's evaluation items."""
    n = len(per["labels"])
    out = {"split": split, "condition": condition}
    for k in PER_REPORT_SCORES:
        out[k] = np.round(per[k], digits) if k in per else np.nan
    out["labels"] = per["labels"]
    return pd.DataFrame(out, index=range(n))


def evaluate(model, processor: cb.Processors, data: common.ExperimentData, split: str, prior: str, pixel_fn, baselines: dict,
             max_new_tokens: int, num_beams: int = 0, repetition_penalty: float = 0.0) -> common.Evaluation:
    """The model's reports on `split` (test, or validation) and on validation, and its image-shuffled control's;
    decoding as given, or chosen on validation (`choose_decoding`) when `num_beams` or `repetition_penalty` is 0.
    `baselines` (`probes.report_baselines`, on the same split) gives the text-only prior (a training report drawn at random) and the
    other rows every arm writes. `detail`: each baseline's summary, the decoding and its validation table, examples."""
    tok, qformer_tok, _ = processor
    report_set, val = data.reported(split), data.val
    val_prompts, report_prompts = prompts(val, prior), prompts(report_set, prior)
    if num_beams and repetition_penalty:
        decoding, decoding_table = (num_beams, repetition_penalty), None
        val_preds = generate_reports(model, tok, qformer_tok, val, val_prompts, pixel_fn, num_beams, max_new_tokens, repetition_penalty)
    else:
        decoding, decoding_table, val_preds = choose_decoding(model, tok, qformer_tok, val, val_prompts, pixel_fn, max_new_tokens)
    beams, penalty = decoding
    refs = [s["reference"] for s in report_set]
    preds = val_preds if split == "val" else generate_reports(model, tok, qformer_tok, report_set, report_prompts, pixel_fn, beams,
                                                              max_new_tokens, penalty)
    shuffled_preds = generate_reports(model, tok, qformer_tok, common.image_shuffled(report_set), report_prompts, pixel_fn, beams,
                                      max_new_tokens, penalty)
    metrics, per = score(preds, refs)
    shuffled, shuffled_per = score_labels(shuffled_preds, refs)  # the control is about findings: CE only
    val_metrics, val_per = score_labels(val_preds, [s["reference"] for s in val])  # what selection reads
    items = pd.DataFrame([{"split": name, "id": s["id"], "reference": s["reference"]}
                          for name, part in (("val", val), ("test", data.test if split == "test" else [])) for s in part])
    items["reference_labels"] = label_strings(label_matrix(items.reference.tolist()))
    # every report's scores and labels, in the order of the items (what the aggregation's bootstraps read)
    per_sample = pd.concat([score_rows("val", "model", val_per)] + ([score_rows("test", "model", per)] if split == "test" else [])
                           + [score_rows(split, "image_shuffled", shuffled_per),
                              *(score_rows(split, name, baselines[name]["per"]) for name in ("common", "random", "retrieval"))])
    written = ([("val", "model", val, val_preds)] + ([("test", "model", report_set, preds)] if split == "test" else [])
               + [(split, "image_shuffled", report_set, shuffled_preds)])
    predictions = pd.DataFrame([{"split": name, "condition": condition, "id": s["id"], "report": p}
                                for name, condition, part, reports in written for s, p in zip(part, reports)])
    examples = pd.DataFrame({"id": [s["id"] for s in report_set], "reference": refs, "prediction": preds,
                             "image_shuffled": shuffled_preds}).head(40)
    return common.Evaluation(split, metrics, shuffled, baselines["random"]["summary"], val_metrics, items, per_sample, predictions,
                             preds, {"baselines": {k: baselines[k]["summary"] for k in ("common", "random", "retrieval")},
                                     "decoding": decoding, "decoding_table": decoding_table, "examples": examples})


TABLE_COLUMNS = ("ce13_micro_f1", "ce13_micro_f1_lo", "ce13_micro_f1_hi", "ce13_macro_f1", "ce5_micro_f1", "abnormal_share", "meteor",
                 "meteor_lo", "meteor_hi", "meteor_nltk", "rougeL", "bleu4", "cider", "ce_micro_f1", "bert_sim")
SPLIT_NAMES = {"test": "test", "val": "validation"}
BASELINE_NAMES = {"common": "most common report", "random": "a training report drawn at random",
                  "retrieval": "nearest-neighbour report"}


def table(evaluation: common.Evaluation, arm: str) -> pd.DataFrame:
    """The arm's metrics table: the model (named `arm`), its image-shuffled control and the three baselines."""
    base = evaluation.detail["baselines"]
    return pd.DataFrame({name: {k: m.get(k) for k in TABLE_COLUMNS} for name, m in
                         [(arm, evaluation.metrics), ("image-shuffled control", evaluation.shuffled),
                          *((BASELINE_NAMES[k], base[k]) for k in BASELINE_NAMES)]}).T


def headline(evaluation: common.Evaluation) -> str:
    """One line for the end of the run: abnormal-only CE-F1 beside the control, METEOR, and how often a finding is named."""
    m, k = evaluation.metrics, "ce13_micro_f1"
    return (f"on {evaluation.split}: abnormal-only CE-F1 {m[k]:.3f} [{m[k + '_lo']:.3f}, {m[k + '_hi']:.3f}] (image-shuffled "
            f"{evaluation.shuffled[k]:.3f}); METEOR {m['meteor']:.3f}; names a finding in {m['abnormal_share']:.0%} of reports "
            f"(references {m['abnormal_share_reference']:.0%})")


def record(evaluation: common.Evaluation, history: dict, trainable: dict, data: common.ExperimentData, lr: dict,
           batch_size: int) -> dict:
    """What run.json keeps of the arm beside its parameters (`Run.finish`): what the aggregation reads."""
    stages, base = history["stages"], evaluation.detail["baselines"]
    beams, penalty = evaluation.detail["decoding"]
    return {"metrics": {**evaluation.metrics, "split": evaluation.split, "image_shuffled": evaluation.shuffled,
                        **{f"baseline_{k}": base[k] for k in ("common", "random", "retrieval")},
                        "val": common.point_estimates(evaluation.val)},
            "decoding": {"num_beams": beams, "repetition_penalty": penalty, "chosen_on_validation": evaluation.detail["decoding_table"]},
            "stages": [{k: v for k, v in r.items() if k != "lora_modules"} | {"lora_modules": len(r["lora_modules"])} for r in stages],
            "trainable_params": sum(r["trainable_params"] for r in stages),
            "total_params": stages[-1]["total_params"] if stages else trainable["total_params"],
            "num_train": len(data.train), "num_val": len(data.val), "num_test": len(data.test), "lr": lr, "batch_size": batch_size}


def probe_encoder(model, ds, train: list[dict], val: list[dict], pixel_fn):
    """`probes.linear_probe` on the pre-trained ViT's mean patch token (what retrieval and stage 1 start from),
    per drawn finding: fit on training studies, AUC on validation ones."""
    labels = {st.uid: st.labels for st in ds.studies}
    return probes.linear_probe(probes.image_embeddings(model, train, pixel_fn).numpy(), [labels[s["study"]] for s in train],
                               probes.image_embeddings(model, val, pixel_fn).numpy(), [labels[s["study"]] for s in val])


def what_to_notice(evaluation: common.Evaluation) -> str:
    """The notebook's closing remarks for one run, each computed from the numbers in its table: how often the
    reports name a finding, how much of the abnormal-only CE-F1 needs the image (one run's intervals,
    overlapping or not), and where the two baselines stand."""
    model, shuffled = evaluation.metrics, evaluation.shuffled
    most_common, retrieval = (evaluation.detail["baselines"][k] for k in ("common", "retrieval"))

    def ci(m, k):
        return f"{m[k]:.3f} [{m[k + '_lo']:.3f}, {m[k + '_hi']:.3f}]" if f"{k}_lo" in m else f"{m[k]:.3f}"

    k = "ce13_micro_f1"
    gap = model[k] - shuffled[k]
    apart = model[f"{k}_lo"] > shuffled[f"{k}_hi"] or model[f"{k}_hi"] < shuffled[f"{k}_lo"]
    lines = [f"- This arm names a finding in {model['abnormal_share']:.0%} of its {SPLIT_NAMES[evaluation.split]} reports; the references do in "
             f"{model['abnormal_share_reference']:.0%}.",
             f"- Abnormal-only CE-F1 {ci(model, k)}; with every study given another study's image, {ci(shuffled, k)}: the image "
             f"{'adds' if gap > 0 else 'changes'} {gap:+.3f} (one run's intervals {'do not overlap' if apart else 'overlap'}).",
             f"- The most common training report scores METEOR {most_common['meteor']:.3f} (this arm {model['meteor']:.3f}) and "
             f"abnormal-only CE-F1 {most_common[k]:.3f}: text overlap rewards the normal report, the abnormal-only CE-F1 does not.",
             f"- Nearest-neighbour retrieval on the pre-trained ViT's features reaches abnormal-only CE-F1 {retrieval[k]:.3f}: "
             f"that much of the findings the frozen features carry without any report model "
             f"({'above' if retrieval[k] > model[k] else 'below'} this arm).",
             f"- One run's intervals resample {SPLIT_NAMES[evaluation.split]} reports only; the comparison across stages, priors and seeds is the "
             "aggregated verdict's (`results/clinicalblip/tiny/verdict.md`, below)."]
    return "\n".join(lines)
