from nbbuild import write

write("notebooks/00_data_tour.ipynb", [
("md", """
# A tour of the data: SynthCXR-IU

The papers trained on MIMIC-CXR, Medical-Diff-VQA, IU X-Ray and RSNA Pneumonia, none of which a laptop has.
What *is* on disk is real: the 3,955 IU X-Ray (Open-i) reports with their human MeSH tags, and the RSNA
Pneumonia boxes, both shipped inside the `torchxrayvision` package. SynthCXR-IU keeps the real report text
and tags and **renders** a frontal radiograph for each study from its tags, drawing every finding at its
tagged side, zone and severity, with a box. It teaches the methods; it is not a medical data set
(`data_cards/synthcxr_iu.md` says what it does and does not represent).
"""),
("params", """
profile: str = "tiny"  # [smoke|tiny|paper] smoke: first 160 studies; tiny and paper: all 3,955
image_size: int = 128  # rendered side in pixels (the tiny models use 128; 224 and 448 for paper-size models)
num_examples: int = 8  # studies in the gallery
seed: int = 0  # rendering seed
output_dir: str = ""  # where this run's figures go (empty: results/data_tour/<profile>/<arm>)
"""),
("code", """
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import medlib.runs
from medlib import plots
from medlib.data.synthcxr import build
from medlib.profiles import get_profile

run = medlib.runs.start("data_tour", globals())
ds = build(image_size=image_size, seed=seed, limit=get_profile(profile).data_limit, progress=False)
run.data_fingerprint = ds.fingerprint
sns.set_theme(style="whitegrid")
print(f"{len(ds.studies)} studies, {sum(not s.has_findings for s in ds.studies)} without a FINDINGS section (kept, flagged)")
pd.Series([s.split for s in ds.studies]).value_counts().rename("studies")
"""),
("md", "## Rendered studies and their boxes"),
("code", """
with_findings = [s for s in ds.studies if s.drawn][:num_examples]
fig, axes = plt.subplots(2, (len(with_findings) + 1) // 2, figsize=(2.4 * ((len(with_findings) + 1) // 2), 5))
for ax, st in zip(axes.flat, with_findings):
    plots.show_study(ax, ds.images[st.index], st)
run.save_figure(fig, "gallery")
plt.show()
"""),
("md", "## What was drawn, and how often"),
("code", """
boxes = plots.box_table(ds)
counts = boxes.groupby("label").size().sort_values(ascending=False).rename("boxes").reset_index()
run.save_table(counts, "finding_counts")
counts.head(20)
"""),
("md", """
## Synthetic opacities against the real RSNA boxes

Opacity-like findings take their size and position from the real RSNA Pneumonia boxes (constrained to the
tagged side and zone), so their distribution should resemble RSNA's.
"""),
("code", """
rsna = plots.rsna_table().assign(source="RSNA (real)")
synth = boxes[boxes.kind == "opacity"][["cx", "cy", "w", "h"]].assign(source="SynthCXR-IU opacities")
both = pd.concat([rsna.sample(min(len(rsna), 3000), random_state=0), synth])
fig, axes = plt.subplots(1, 4, figsize=(14, 3))
for ax, col in zip(axes, ["cx", "cy", "w", "h"]):
    sns.histplot(data=both, x=col, hue="source", stat="density", common_norm=False, element="step", ax=ax, bins=30)
run.save_figure(fig, "opacity_boxes_vs_rsna")
stats = both.groupby("source")[["cx", "cy", "w", "h"]].agg(["mean", "std"]).round(3)
run.save_table(stats.reset_index(), "opacity_boxes_vs_rsna")
stats
"""),
("md", "## Browse studies (a slider in JupyterLab; a static gallery when run by papermill)"),
("code", """
plots.study_browser(ds, with_findings)
run.finish(metrics={"num_studies": len(ds.studies), "num_boxes": len(boxes)}, build=ds.meta)
"""),
])
