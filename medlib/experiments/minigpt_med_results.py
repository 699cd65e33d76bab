"""MiniGPT-Med: the finished arms aggregated into tables, figures and the computed verdict (what
`medlib reproduce` and `medlib aggregate minigpt_med` write beside the arms)."""

from __future__ import annotations

import json
from pathlib import Path

from medlib import fileio
from medlib.runs import to_markdown


def aggregate(run_dirs: list[Path], out_dir: Path):
    """All finished arms -> `summary` (mean and spread over seeds) and the strict-IoU figure."""

    # imported here: heavy: figures only; heavy: tables only
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = []
    for d in run_dirs:
        rec = json.loads((Path(d) / "run.json").read_text())
        p, m = rec["run_info"]["parameters"], rec["train_info"]["metrics"]
        rows.append({"tasks": "+".join(p["tasks"]), "lora_r": p["lora_r"], "use_lora": p["use_lora"], "box_augment": p["box_augment"],
                     "seed": p["seed"], "trainable_params": rec["train_info"].get("trainable_params"),
                     "iou_strict": m["grounding"]["iou_strict"], "iou_strict_lo": m["grounding"]["iou_strict_lo"],
                     "iou_strict_hi": m["grounding"]["iou_strict_hi"], "acc_at_05": m["grounding"]["acc_at_05"],
                     "rsna_map": m["grounding"]["rsna_map"], "iou_lenient": m["grounding"]["iou_lenient"],
                     "malformed_share": m["grounding"].get("malformed_share", float("nan")),  # runs before the rule: none
                     "mean_box_iou": m["baseline_mean_box"]["iou_strict"], "mean_box_lo": m["baseline_mean_box"]["iou_strict_lo"],
                     "mean_box_hi": m["baseline_mean_box"]["iou_strict_hi"], "centred_iou": m["baseline_centred"]["iou_strict"],
                     "vqa_accuracy": m.get("vqa", {}).get("exact_match"), "report_bert_sim": m.get("report", {}).get("bert_sim"),
                     "minutes": rec["run_info"]["duration_s"] / 60})
    df = pd.DataFrame(rows)
    keys = ["tasks", "lora_r", "use_lora", "box_augment"]
    summary = df.groupby(keys).agg(seeds=("seed", "nunique"), trainable_params=("trainable_params", "first"),
                                   iou_strict=("iou_strict", "mean"), iou_strict_sd=("iou_strict", "std"),
                                   ci_lo=("iou_strict_lo", "mean"), ci_hi=("iou_strict_hi", "mean"),
                                   acc_at_05=("acc_at_05", "mean"), rsna_map=("rsna_map", "mean"), iou_lenient=("iou_lenient", "mean"),
                                   malformed_share=("malformed_share", "mean"), mean_box_iou=("mean_box_iou", "mean"), mean_box_lo=("mean_box_lo", "mean"),
                                   mean_box_hi=("mean_box_hi", "mean"), centred_iou=("centred_iou", "mean"),
                                   vqa_accuracy=("vqa_accuracy", "mean"), report_bert_sim=("report_bert_sim", "mean"),
                                   minutes=("minutes", "mean")).reset_index()
    fileio.write_text(out_dir / "summary.csv", summary.to_csv(index=False))
    fileio.write_text(out_dir / "summary.md", "MiniGPT-Med grounding arms (tiny profile): mean over seeds; intervals are 95 % bootstrap "
                      "intervals over test findings, averaged over seeds; `iou_lenient` is the paper's way (unparsable answers "
                      "dropped).\n\n" + to_markdown(summary))
    lines = ["Computed by `medlib.experiments.minigpt_med_results.aggregate` from the summary above.", ""]
    for r in summary.itertuples():
        arm = f"tasks={r.tasks}, lora_r={r.lora_r}{'' if r.use_lora else ' (LoRA off)'}"
        clear = r.ci_lo > r.mean_box_hi
        lines.append(f"- {arm}: strict IoU {r.iou_strict:.3f} [{r.ci_lo:.3f}, {r.ci_hi:.3f}] "
                     f"{'beats' if clear else 'does NOT clearly beat'} the mean training box {r.mean_box_iou:.3f} "
                     f"[{r.mean_box_lo:.3f}, {r.mean_box_hi:.3f}]{' (intervals do not overlap)' if clear else ' (intervals overlap)'}; "
                     f"the paper's lenient IoU {r.iou_lenient:.3f}.")
    lines.append("- The lenient mean keeps only answers with exactly one box; with several reference boxes per finding "
                 "(bilateral findings) it can fall below the strict mean, which matches boxes one-to-one.")
    fileio.write_text(out_dir / "verdict.md", "\n".join(lines) + "\n")
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    lab = summary.apply(lambda r: f"{r.tasks}\nr={r.lora_r}{'' if r.use_lora else ' (LoRA off)'}", axis=1)
    ax.errorbar(range(len(summary)), summary.iou_strict, yerr=[summary.iou_strict - summary.ci_lo, summary.ci_hi - summary.iou_strict],
                fmt="o", label="model (strict IoU)")
    ax.errorbar(range(len(summary)), summary.mean_box_iou, yerr=[summary.mean_box_iou - summary.mean_box_lo,
                                                                 summary.mean_box_hi - summary.mean_box_iou],
                fmt="s", color="0.5", label="mean training box")
    ax.set_xticks(range(len(summary)), lab, fontsize=7)
    ax.set_ylabel("strict IoU")
    ax.legend(fontsize=8)
    fileio.write_with(out_dir / "iou_by_arm.png", lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return summary
