from nbbuild import write

write("notebooks/03_minigpt_med_grounding.ipynb", [
("md", """
# MiniGPT-Med: disease grounding with boxes written as text

**The claim.** MiniGPT-Med (Alkhaldi et al., 2024) puts one LLaMA-2-chat behind a frozen EVA ViT and a single
linear projection, trains LoRA and the projection, and handles report generation, VQA and **disease grounding**,
where the answer is text: `<p>pneumonia</p> {<12><30><45><71>}` (IoU 0.26 on RSNA).

**From image to LLM tokens.** The EVA ViT turns a 448 px image into 32 x 32 = 1024 patch tokens; after a frozen
LayerNorm, every **4 consecutive tokens (raster order) are concatenated**, giving 256 tokens of 4 x 1408 values,
and one Linear maps each to LLaMA's width. The tiny profile does the same at 128 px with 16 px patches: 64 patches
become 16 LLM tokens. They are spliced into `[INST] <Img><ImageHere></Img> [task] instruction [/INST]`.

**Boxes as text.** Each coordinate is `int(v / image_side * 100)`, so a box lives on a 0..100 grid; several boxes of
one finding are joined by `<delim>`. **Task identifiers** say what is asked: `[detection] label` and `[refer] where
is the label?` answer with boxes, `[identify] what is it in {<..>}` answers with the label, `[vqa]` answers a
question; report generation uses a plain instruction.

**Scoring, strictly.** MiniGPT-Med's evaluation kept only answers with exactly one parsable box. medlib counts an
unparsable answer as IoU 0, matches several boxes one-to-one (Hungarian), and reports the paper's lenient number
beside it.

**The paper profile.** `profile="paper"` builds EVA ViT-g at 448 px (weights from `eva_checkpoint=`, e.g.
MiniGPT-v2's `eva_vit_g.pth`) and LLaMA-2-7B-chat (`llm_checkpoint=`, a hub name or local folder) in bf16, and
grounds on RSNA Pneumonia: the label CSV (`rsna_labels_csv=`) and the DICOMs (`rsna_image_dir=`), the patients
with boxes only, split 80 / 10 / 10 by patient, `tasks` among detection / refer / identify (RSNA has no questions
or reports). `released_checkpoint=` loads MiniGPT-Med's own projection and LoRA. `llm_checkpoint="random"` builds
the architecture with random weights, nothing downloaded, to check that the path runs (`python -m medlib gpu-check`).
"""),
("params", """
profile: str = "tiny"  # [smoke|tiny|paper] smoke: random tiny models; tiny: pre-trained tiny zoo (CPU); paper: EVA-g + LLaMA-2-7B (GPU)
tasks: list = ["detection", "refer", "identify", "vqa", "report"]  # [detection|refer|identify|vqa|report] the training mixture
lora_r: int = 64  # LoRA rank on q_proj / v_proj (the paper: 64)
lora_alpha: int = 16  # LoRA alpha (the paper: 16)
use_lora: bool = True  # False trains the projection only (a baseline)
image_size: int = 0  # image side in pixels; 0: the profile's (smoke / tiny 128, paper 448 as in MiniGPT-v2)
box_augment: bool = True  # move and zoom images with their boxes during training
seed: int = 0  # seeds data order, initialisation and bootstrap
num_epochs: int = 4  # passes over the training mixture
lr: float = 0.003  # AdamW learning rate (tiny models need more than the paper's 1e-4 to 1e-5)
batch_size: int = 32  # samples per optimizer step
max_new_tokens: int = 40  # decoding budget: a box is about 15 tokens
num_beams: int = 1  # beams for decoding; 1 means greedy
llm_checkpoint: str = ""  # paper profile: LLaMA-2-chat hub name or local folder (default meta-llama/Llama-2-7b-chat-hf); "random": its architecture with random weights (GPU check)
eva_checkpoint: str = ""  # paper profile: EVA ViT-g weights file (e.g. MiniGPT-v2's eva_vit_g.pth); empty: random
rsna_labels_csv: str = ""  # paper profile: RSNA stage_2_train_labels.csv
rsna_image_dir: str = ""  # paper profile: folder of <patientId>.dcm
released_checkpoint: str = ""  # optional: MiniGPT-Med's released checkpoint file (projection + LoRA; on the paper profile the paper's own), loaded before training
device: str = "auto"  # auto: CUDA when present, else CPU
output_dir: str = ""  # where this run's results go (empty: results/minigpt_med/<profile>/<arm>)
"""),
("code", """
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

import medlib.runs
from medlib import plots
from medlib.boxes import from_grid, parse_boxes
from medlib.device import resolve_device
from medlib.experiments import minigpt_med as exp
from medlib.metrics.clinical import ce_scores
from medlib.metrics.text import bert_sim, exact_match
from medlib.train import TrainConfig, train

run = medlib.runs.start("minigpt_med", globals())
dev = resolve_device(device)
image_size = exp.image_side(profile, image_size)
sns.set_theme(style="whitegrid")
ds, train_mix, test_ground, test_vqa, test_reports = exp.load_data(profile, tasks, seed, rsna_labels_csv, rsna_image_dir, image_size)
run.data_fingerprint = ds.fingerprint
pd.Series([s["task"] for s in train_mix]).value_counts().rename("training samples")
"""),
("md", "## A worked example: one study, its tokens and its box text"),
("code", """
example = next(s for s in test_ground)
st = next(s for s in ds.studies if s.index == example["image_index"])
fig, ax = plt.subplots(figsize=(3.2, 3.2))
plots.show_study(ax, ds.images[st.index], st)
plt.show()
model, tok, trainable = exp.load_model(profile, lora_r, lora_alpha, use_lora, image_size, released_checkpoint,
                                       llm_checkpoint, eva_checkpoint)
model.to(dev)
print("instruction:", example["instruction"])
print("answer text:", example["answer"])
print("answer tokens:", tok.convert_ids_to_tokens(tok(" " + example["answer"], add_special_tokens=False)["input_ids"]))
print("boxes back in pixels:", [tuple(round(v) for v in from_grid(b, ds.image_size)) for b in parse_boxes(example["answer"])])
print(f"image -> {model.image_tokens(exp.to_pixels(ds, ds.images[[st.index]]).to(dev)).shape[1]} LLM tokens; "
      f"trainable {trainable['trainable_params']:,} of {trainable['total_params']:,} parameters")
"""),
("md", """
## Training

Loss on the answer tokens only; the frozen EVA ViT's features are cached, except for grounding samples that
box augmentation moves (the image is moved and zoomed, and the box text with it).
"""),
("code", """
feats = exp.cached_features(model, ds, [s["image_index"] for s in train_mix + test_ground + test_vqa + test_reports],
                            key=f"{profile}:{image_size}")
cfg = TrainConfig(num_epochs=num_epochs, lr=lr, batch_size=batch_size, seed=seed, desc="MiniGPT-Med fine-tuning")
history = train(model, train_mix, exp.make_collate(ds, feats, box_augment, seed), exp.make_loss(tok), cfg, device=dev)
curve = pd.DataFrame(history["loss_curve"], columns=["step", "loss"])
fig, ax = plt.subplots(figsize=(6, 3)); sns.lineplot(data=curve, x="step", y="loss", ax=ax); ax.set_title("training loss")
run.save_figure(fig, "loss_curve"); plt.show()
"""),
("md", "## Grounding on held-out studies, strictly, against two baselines"),
("code", """
outputs = exp.generate(model, tok, feats, test_ground, max_new_tokens, num_beams=num_beams)
grounding, detail = exp.grounding_summary(outputs, test_ground)
mean_box, _ = exp.grounding_summary(exp.mean_box_baseline(train_mix, test_ground), test_ground)
centred, _ = exp.grounding_summary(exp.centred_baseline(test_ground), test_ground)
table = pd.DataFrame({"model": grounding, "mean training box": mean_box, "centred box": centred}).T[
    ["iou_strict", "iou_strict_lo", "iou_strict_hi", "acc_at_05", "rsna_map", "iou_lenient", "lenient_kept", "parsable_share"]]
run.save_table(table.reset_index(names="system"), "grounding")
per_class = pd.DataFrame(detail["per_class"]).T.rename_axis("finding").reset_index()
run.save_table(per_class, "iou_by_finding")
table
"""),
("code", """
scores = pd.DataFrame({"finding": [s["label"] for s in test_ground], "iou": detail["per_sample"]["iou_strict"],
                       "size": [exp.box_size_class(s["boxes"][0]) for s in test_ground]})
fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
sns.histplot(scores.iou, bins=20, ax=axes[0]); axes[0].set_title("strict IoU per test finding")
sns.barplot(data=scores, y="finding", x="iou", ax=axes[1], errorbar=None); axes[1].set_title("by finding")
sns.barplot(data=scores, x="size", y="iou", ax=axes[2], errorbar=("ci", 95), seed=seed); axes[2].set_title("by box size")
run.save_figure(fig, "iou_distribution"); plt.show()
"""),
("md", "## A gallery: ground truth (green), prediction (red) and the raw model text"),
("code", """
from matplotlib.patches import Rectangle

fig, axes = plt.subplots(2, 4, figsize=(14, 7.5))
for ax, s, text in zip(axes.flat, test_ground, outputs):
    ax.imshow(ds.images[s["image_index"]], cmap="gray"); ax.set_axis_off()
    for b, color in [(b, "lime") for b in s["boxes"]] + [(b, "red") for b in parse_boxes(text)]:
        x1, y1, x2, y2 = from_grid(b, ds.image_size)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, lw=1.5))
    ax.set_title(f"{s['instruction']}\\n{text[:48]}", fontsize=7)
run.save_figure(fig, "gallery"); plt.show()
"""),
("md", "## The other tasks from the same model"),
("code", """
other = {}
if "vqa" in tasks:
    vqa_out = exp.generate(model, tok, feats, test_vqa, 8)
    refs = [s["answer"] for s in test_vqa]
    other["vqa"] = {"exact_match": float(np.mean(exact_match(vqa_out, refs))),
                    **{k: v for k, v in bert_sim(vqa_out, refs).items() if k != "per_sample"}}
if "report" in tasks:
    rep_out = exp.generate(model, tok, feats, test_reports, 48)
    refs = [s["answer"] for s in test_reports]
    other["report"] = {**{k: v for k, v in bert_sim(rep_out, refs).items() if k != "per_sample"},
                       **{k: v for k, v in ce_scores(rep_out, refs).items() if k != "per_sample"}}
other
"""),
("md", """
## Explore (a widget in JupyterLab; the first examples when run by papermill)
"""),
("code", """
def show(i=0, task="detection"):
    pool = {"detection": test_ground, "vqa": test_vqa, "report": test_reports}[task]
    s = pool[i % len(pool)]
    text = exp.generate(model, tok, feats, [s], max_new_tokens)[0]
    fig, ax = plt.subplots(figsize=(3.5, 3.5)); ax.imshow(ds.images[s["image_index"]], cmap="gray"); ax.set_axis_off()
    for b in parse_boxes(text):
        x1, y1, x2, y2 = from_grid(b, ds.image_size)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", lw=1.5))
    plt.show()
    print("prompt:", exp.mg.TEMPLATE.format(instruction=s["instruction"]), "\\nmodel:", text, "\\nreference:", s["answer"])

pools = [t for t, p in (("detection", test_ground), ("vqa", test_vqa), ("report", test_reports)) if p]
plots.interactive_or_static(show, {"i": (0, 50), "task": pools})
"""),
("code", """
run.finish(metrics={"grounding": grounding, "baseline_mean_box": mean_box, "baseline_centred": centred, **other,
                    "per_class": detail["per_class"]},
           per_sample={"iou_strict": detail["per_sample"]["iou_strict"]}, loss_curve=history["loss_curve"],
           trainable_params=trainable["trainable_params"], total_params=trainable["total_params"],
           num_train_samples=len(train_mix), num_test_findings=len(test_ground))
print(f"strict IoU {grounding['iou_strict']:.3f} [{grounding['iou_strict_lo']:.3f}, {grounding['iou_strict_hi']:.3f}] "
      f"vs mean box {mean_box['iou_strict']:.3f}; the paper's lenient IoU {grounding['iou_lenient']:.3f}")
"""),
("md", """
## What to notice

- The lenient IoU (failures dropped) is higher than the strict one whenever the model sometimes writes no box:
  compare both before comparing with the paper's 0.26.
- The mean training box is a strong baseline for findings whose position barely varies (cardiomegaly, devices);
  grounding has to beat it where position varies (opacities, nodules). `iou_by_finding` shows where it does.
- `results/minigpt_med/tiny/summary.md` compares the training mixture and the LoRA rank across seeds.
"""),
])
