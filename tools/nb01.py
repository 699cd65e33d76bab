from nbbuild import write

write("notebooks/01_medblip_unfreeze_ratio.ipynb", [
("md", """
# MedBLIP: how much of the language model should we unfreeze?

**The question.** MedBLIP (Gong et al., *CMIG* 124, 2025) fine-tunes BLIP-2 (OPT-2.7B) for chest X-ray
question answering with the image encoder frozen, and unfreezes only a *share of the LLM's fully
connected layers*. Their best share is **31.25 %**, reaching **ROUGE-L 66.12 %**. This notebook runs one
arm of that ablation; `medlib sweep medblip --grid unfreeze_ratio=0,0.0625,...` runs them all.

**How BLIP-2 is wired.** A ViT turns the radiograph into patch features; a Q-Former's learned *query
tokens* read those features through cross-attention; `language_projection` maps the queries to OPT's
width, and they are written over `<image>` placeholder tokens in front of the prompt
`Question:{q} Answer:`. OPT then writes the answer.

**What trains.** Everything is frozen, then MedBLIP's code unfreezes the Q-Former's query tokens and
the query-branch feed-forward of every Q-Former layer, plus `fc1`/`fc2` of the OPT decoder layers picked
*symmetrically from both ends* of the 32-layer stack: ratio 0.3125 = 10 of 32 layers = layers 0-4 and
27-31. The tiny profile keeps the 32 layers so the ratios map to layers exactly as in the paper.

**The paper profile.** `profile="paper"` loads `Salesforce/blip2-opt-2.7b` (or a local folder of it,
`checkpoint=`) and reads Medical-Diff-VQA's CSV (`diff_vqa_csv=`) with the MIMIC-CXR-JPG images it names
(`mimic_jpg_root=`); the images go through the checkpoint's own image processor (224 px). Unless set,
training follows MedBLIP's code: AdamW at learning rate 1e-5, batch 4, the prompt `Question:{q} Answer:`, loss on the answer tokens (PAPERS.md, MedBLIP's training).
Differences, on purpose: "difference" questions (they need a second image) are left out, and the split is
70 / 15 / 15 by study, where MedBLIP split rows at random and so showed test images in training; on the GPU
the frozen weights are kept in bf16 and the trainable ones in fp32 under bf16 autocast (MedBLIP kept all in
fp32; the numbers are the same up to bf16 rounding). `checkpoint="random"` builds the same architecture with
random weights, nothing downloaded, to check that the path runs (`python -m medlib gpu-check`).
"""),
("params", """
profile: str = "tiny"  # [smoke|tiny|paper] smoke: random tiny model, seconds; tiny: pre-trained tiny zoo, CPU minutes; paper: real checkpoint, GPU
unfreeze_ratio: float = 0.3125  # share of OPT decoder layers whose fc1/fc2 train (steps of 1/32)
augment: bool = True  # MedBLIP's QA rewriting (negated presence questions, abnormality -> presence)
conv_stem: bool = False  # replace the ViT patch embedding by the trainable hMLP convolutional stem
seed: int = 0  # seeds data order, initialisation and bootstrap
num_epochs: int = 3  # passes over the training QA pairs
lr: float = 0.0  # AdamW learning rate; 0: the profile's (paper 1e-5 as MedBLIP's code; tiny / smoke 2e-3)
batch_size: int = 0  # QA pairs per optimizer step; 0: the profile's (paper 4 as MedBLIP's code; tiny / smoke 32)
max_new_tokens: int = 10  # greedy decoding budget; answers average 1.5 words
checkpoint: str = ""  # paper profile: hub name or local folder (default Salesforce/blip2-opt-2.7b); "random": its architecture with random weights (GPU check)
diff_vqa_csv: str = ""  # paper profile: Medical-Diff-VQA CSV (study_id, subject_id, question_type, question, answer, dicom_id)
mimic_jpg_root: str = ""  # paper profile: MIMIC-CXR-JPG folder holding the images the CSV names
device: str = "auto"  # auto: CUDA when present, else CPU
checkpoint_every: int = 50  # optimizer steps between resumable checkpoints (0: none); never changes the numbers
output_dir: str = ""  # where this run's results go (empty: results/medblip/<profile>/<arm>)
"""),
("code", """
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import medlib.runs
from medlib.device import resolve_device
from medlib.experiments import medblip as exp
from medlib.train import TrainConfig, remove_checkpoint, train

run = medlib.runs.start("medblip", globals())  # checks every parameter, seeds, opens results/<...>/run.json
dev = resolve_device(device)
lr, batch_size = exp.hparams(profile, lr, batch_size)  # 0 means the profile's setting (the paper profile note above)
sns.set_theme(style="whitegrid")
print(run.output_dir, dev)
"""),
("md", """
## Data

SynthCXR-IU: each real IU X-Ray study with a radiograph rendered from its MeSH tags. The questions follow
Medical-Diff-VQA's six types (abnormality, presence, location, level, view, type) and are built from what
was drawn. Splits are by study, so no image is in both training and test (MedBLIP's own split was
row-level, which leaks images).
"""),
("code", """
ds, train_qa, test_qa = exp.load_data(profile, augment, seed, diff_vqa_csv, mimic_jpg_root, checkpoint)
run.data_fingerprint = ds.fingerprint
balance = pd.DataFrame(train_qa).groupby("question_type").answer.agg(pairs="size", distinct_answers="nunique",
                                                                      most_common=lambda a: a.value_counts().index[0])
print(f"{len(train_qa)} training pairs ({sum(q.get('augmented', False) for q in train_qa)} from augmentation), {len(test_qa)} test pairs")
balance
"""),
("md", """
## The trainable set

The figure shows the 32 OPT decoder layers; a coloured layer has its `fc1`/`fc2` unfrozen.
"""),
("code", """
model, tok, trainable = exp.load_model(profile, unfreeze_ratio, conv_stem, checkpoint)
exp.place(model, dev)  # on a GPU the frozen weights are kept in bf16
fig, ax = plt.subplots(figsize=(9, 1.3))
layers = range(trainable["num_decoder_layers"])
ax.bar(layers, 1, color=["C1" if i in trainable["unfrozen_layers"] else "0.85" for i in layers], edgecolor="white")
ax.set_yticks([]); ax.set_xlabel("OPT decoder layer"); ax.set_xlim(-0.5, len(layers) - 0.5)
ax.set_title(f"unfreeze_ratio={unfreeze_ratio:g}: fc1/fc2 of layers {trainable['unfrozen_layers']} train "
             f"— {trainable['trainable_params']:,} of {trainable['total_params']:,} parameters")
run.save_figure(fig, "trainable_layers")
plt.show()
"""),
("md", """
## Training

Loss on the answer tokens only, AdamW with linear warm-up and decay. The frozen ViT's features are
computed once and cached on disk, so every arm of a sweep reuses them (not with the conv stem, which trains).
"""),
("code", """
feats = None if conv_stem else exp.cached_features(model, ds, [q["image_index"] for q in train_qa + test_qa],
                                                    model_key=f"{profile}:{checkpoint}")
train_enc = exp.encode(train_qa, tok, model.config.num_query_tokens, model.config.image_token_id, with_answer=True)
cfg = TrainConfig(num_epochs=num_epochs, lr=lr, batch_size=batch_size, seed=seed, desc="MedBLIP fine-tuning")
cfg.checkpoint_every = checkpoint_every  # a killed run resumes from here when re-run into the same output_dir
history = train(model, train_enc, lambda b: exp.collate(b, feats, tok.pad_token_id), exp.make_loss(ds, conv_stem), cfg,
                device=dev, checkpoint_path=run.path("checkpoint.pt"))
curve = pd.DataFrame(history["loss_curve"], columns=["step", "loss"])
fig, ax = plt.subplots(figsize=(6, 3))
sns.lineplot(data=curve, x="step", y="loss", ax=ax); ax.set_title("training loss (answer tokens)")
run.save_figure(fig, "loss_curve")
plt.show()
"""),
("md", """
## Evaluation

Greedy answers, scored as MedBLIP's code does: ROUGE-1/2/L (`rouge_score`, stemmer, F-measure) and
BLEU-1..4 (nltk `sentence_bleu`, whitespace tokens, smoothing method1), per sample and averaged, with 95 %
bootstrap intervals. Two baselines show whether the model uses the image: the most frequent training answer
per question type, and the same fine-tuned model fed blank images.
"""),
("code", """
preds = exp.answer(model, tok, ds, test_qa, feats, max_new_tokens)
metrics, per_sample = exp.score(preds, test_qa)
blank_metrics, _ = exp.score(exp.answer(model, tok, ds, test_qa, None, max_new_tokens, blank=True), test_qa)
major_metrics, _ = exp.score(exp.majority_baseline(train_qa, test_qa), test_qa)
table = pd.DataFrame({name: {k: m[k] for k in ["rougeL", "rougeL_lo", "rougeL_hi", "rouge1", "rouge2", "bleu1", "bleu4",
                                                 "closed_accuracy", "exact_match"]}
                      for name, m in [("model", metrics), ("blank images", blank_metrics), ("majority answer", major_metrics)]}).T
run.save_table(table.reset_index(names="system"), "metrics")
per_type = pd.Series({qt: metrics.get(f"rougeL_{qt}") for qt in exp.QUESTION_TYPES}, name="rougeL").dropna()
run.save_table(per_type.rename_axis("question_type").reset_index(), "rougeL_per_question_type")
examples = pd.DataFrame(test_qa)[["question_type", "question", "answer"]].assign(prediction=preds)
run.save_table(examples, "predictions")
table
"""),
("code", """
examples.groupby("question_type").head(2)
"""),
("code", """
run.finish(metrics={**metrics, "baseline_blank": blank_metrics, "baseline_majority": major_metrics},
           per_sample={"rougeL": per_sample["rougeL"], "exact_match": per_sample["exact_match"]},
           loss_curve=history["loss_curve"], train_seconds=history.get("train_seconds"),
           trainable_params=trainable["trainable_params"], total_params=trainable["total_params"],
           unfrozen_layers=trainable["unfrozen_layers"], num_train_pairs=len(train_qa), num_test_pairs=len(test_qa),
           lr=lr, batch_size=batch_size)
remove_checkpoint(run.path("checkpoint.pt"))  # finished: the checkpoint has done its job
print(f"ROUGE-L {metrics['rougeL']:.3f} [{metrics['rougeL_lo']:.3f}, {metrics['rougeL_hi']:.3f}]")
"""),
("md", """
## What the tiny ablation found

The cell below shows `results/medblip/tiny/verdict.md`, which the aggregation computes from the committed arms:
the best arm against both baselines, the spread across ratios against the spread across seeds, and the paper's
31.25 %. Whatever the numbers say, three things limit what the tiny curve can say about the paper:

- **Capacity.** OPT-2.7B's `fc1`/`fc2` hold 2560 x 10240 weights per layer; the tiny OPT's hold 64 x 256. The
  paper's optimum is a balance between adapting and forgetting in a large pre-trained model; a tiny model
  pre-trained for minutes has little to forget.
- **What the image can tell.** The questions are built from what was drawn, so the image decides abnormality,
  presence, location and level; but the question alone decides most `type` answers, and a language prior answers
  many presence questions. The blank-image baseline measures how much of the score the image earns.
- **Resolution.** Three seeds and a few hundred test questions give intervals of about +-0.03 ROUGE-L; neighbouring
  ratios differ by one layer at each end, and unless they differ by more than their intervals no single best ratio
  is identifiable, only a trend.
"""),
("code", """
from IPython.display import Markdown

from medlib.report import verdict

Markdown(verdict("medblip"))
"""),
("md", """
## What to notice

- The ratio only changes *which OPT feed-forward layers* may move; the trainable-parameter line in the
  ablation figure (`results/medblip/tiny/rougeL_vs_ratio.png`) grows linearly with it.
- Compare the model with the blank-image baseline: the gap is what the image contributes. Compare with
  the majority answer: many closed questions can be answered from priors alone.
- The paper reports one number per ratio with no interval; the intervals here show how much of a
  difference between neighbouring ratios is noise. The summary in `results/medblip/tiny/summary.md`
  gives the spread over seeds. See `results/README.md` for what the tiny curve does and does not show.
"""),
])
