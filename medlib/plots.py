"""Figures the notebooks share: a study with its boxes, box statistics, a study browser."""

from __future__ import annotations

import os
import textwrap

import numpy as np

from medlib.boxes import from_grid, parse_boxes
from medlib.data.synthcxr import rsna_boxes


def show_study(ax, image: np.ndarray, study, title: bool = True) -> None:
    """A rendered radiograph with its ground-truth boxes and labels."""
    # imported here: heavy: figures only
    from matplotlib.patches import Rectangle

    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    for k, d in enumerate(study.drawn):
        for b in d["boxes"]:
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color=f"C{k % 10}", lw=1.2))
            ax.text(b[0], b[1] - 1, d["label"], color=f"C{k % 10}", fontsize=6, va="bottom")
    ax.set_axis_off()
    if title:
        ax.set_title(f"{study.uid} ({study.view})", fontsize=8)


REFERENCE_COLOR, PREDICTION_COLOR = "lime", "red"


def draw_grid_boxes(ax, boxes, image_side: float, color: str, label: str | None = None) -> None:
    """Boxes on MiniGPT-Med's 0..100 grid drawn over an image of `image_side` pixels."""
    # imported here: heavy: figures only
    from matplotlib.patches import Rectangle

    for k, b in enumerate(boxes):
        x1, y1, x2, y2 = from_grid(b, image_side)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, lw=1.5, label=label if k == 0 else None))


def grounding_gallery(images, samples: list[dict], outputs: list[str], image_side: float, per_kind: int = 4):
    """The first `per_kind` position-variable test findings on the top row and the first `per_kind` position-fixed
    ones below (the first findings where a kind has none): the image, the reference boxes and the model's, its
    instruction and answer; one legend says which colour is which."""
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    shown = [i for kind in ("variable", "fixed") for i in [i for i, s in enumerate(samples) if s.get("position") == kind][:per_kind]]
    shown = shown or list(range(min(len(samples), 2 * per_kind)))
    samples, outputs, n = [samples[i] for i in shown], [outputs[i] for i in shown], 2 * per_kind
    cols = max(1, (n + 1) // 2)
    fig, axes = plt.subplots(2, cols, figsize=(3.5 * cols, 7.5), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, s, text in zip(axes.flat, samples[:n], outputs[:n]):
        ax.imshow(images[s["image_index"]], cmap="gray")
        draw_grid_boxes(ax, s["boxes"], image_side, REFERENCE_COLOR)
        draw_grid_boxes(ax, parse_boxes(text), image_side, PREDICTION_COLOR)
        kind = f"position-{s['position']}: " if s.get("position") else ""
        ax.set_title(f"{kind}{s['instruction']}\n{textwrap.shorten(text, 48, placeholder='...')}", fontsize=7)
    handles = [Line2D([], [], color=REFERENCE_COLOR, lw=2, label="reference box"),
               Line2D([], [], color=PREDICTION_COLOR, lw=2, label="model's box")]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    return fig


def iou_by_finding(samples: list[dict], details: dict[str, dict], seed: int = 0):
    """Strict IoU per finding label of `samples` with 95 % bootstrap intervals, one panel per kind of finding
    (position-variable, position-fixed), one bar per system (`details`: name -> its per-sample scores, as
    `metrics.grounding.grounding_summary`'s detail)."""
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    scores = pd.concat([pd.DataFrame({"finding": [s["label"] for s in samples], "position": [s.get("position", "") for s in samples],
                                      "iou": d["per_sample"]["iou_strict"], "system": name})
                        for name, d in details.items()], ignore_index=True)
    kinds = [k for k in ("variable", "fixed") if (scores.position == k).any()] or [None]
    heights = [max(2.0, 0.35 * scores[scores.position == k].finding.nunique() + 1) if k else 4.0 for k in kinds]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(7.5, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, kind in zip(axes[:, 0], kinds):
        part = scores if kind is None else scores[scores.position == kind]
        sns.barplot(data=part, y="finding", x="iou", hue="system", errorbar=("ci", 95), seed=seed, ax=ax,
                    order=sorted(part.finding.unique()))
        ax.set_xlim(0, 1)
        ax.set_xlabel("strict IoU (95 % bootstrap interval over findings)")
        ax.set_ylabel("finding")
        ax.tick_params(axis="y", labelsize=8)
        ax.set_title(f"position-{kind} findings" if kind else "all findings", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def box_table(ds):
    """One row per drawn box: label, kind, normalised centre and size."""
    # imported here: heavy: tables only
    import pandas as pd

    s = ds.image_size
    rows = [{"label": d["label"], "kind": d["kind"], "cx": (b[0] + b[2]) / 2 / s, "cy": (b[1] + b[3]) / 2 / s,
             "w": (b[2] - b[0]) / s, "h": (b[3] - b[1]) / s}
            for st in ds.studies for d in st.drawn for b in d["boxes"]]
    return pd.DataFrame(rows)


def rsna_table():
    # imported here: heavy: tables only
    import pandas as pd

    b = rsna_boxes()
    return pd.DataFrame({"cx": (b[:, 0] + b[:, 2]) / 2, "cy": (b[:, 1] + b[:, 3]) / 2, "w": b[:, 2] - b[:, 0], "h": b[:, 3] - b[:, 1]})


def study_browser(ds, studies=None):
    """An ipywidgets slider over studies: image with boxes beside the real report and tags.
    Outside a live kernel (papermill, nbconvert) a static gallery of the first studies is shown."""
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt

    studies = studies or ds.studies

    def render(i):
        st = studies[i]
        fig, (ax, tx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 1.4]})
        show_study(ax, ds.images[st.index], st)
        tx.axis("off")
        text = (f"INDICATION: {st.indication}\n\nFINDINGS: {st.findings}\n\nIMPRESSION: {st.impression}\n\n"
                f"MeSH tags: {'; '.join(st.tags)}\nnot drawn: {'; '.join(st.undrawn) or '-'}")

        tx.text(0, 1, "\n".join(textwrap.fill(p, 70) for p in text.split("\n")), va="top", fontsize=7, family="monospace")
        plt.show()

    if _live_kernel():
        # imported here: only in a live Jupyter kernel
        import ipywidgets as w

        return w.interact(render, i=w.IntSlider(0, 0, len(studies) - 1, description="study"))
    for i in range(min(3, len(studies))):
        render(i)
    return None


def _live_kernel() -> bool:
    """True in an interactive Jupyter kernel with ipywidgets; False under papermill or plain Python."""
    try:
        # imported here: only in a Jupyter kernel
        import ipywidgets  # noqa: F401  (is it installed?)
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = get_ipython()
    return kernel is not None and "IPKernelApp" in kernel.config and not _under_papermill()


def _under_papermill() -> bool:

    return bool(os.environ.get("PAPERMILL_EXECUTION")) or "papermill" in os.environ.get("MEDLIB_EXECUTOR", "")


def interactive_or_static(func, controls: dict):
    """`ipywidgets.interact(func, **controls)` in a live JupyterLab kernel; outside one (papermill,
    nbconvert) call `func` with each control's first value, so the notebook still shows an example."""
    if _live_kernel():
        # imported here: only in a live Jupyter kernel
        import ipywidgets as w

        return w.interact(func, **controls)
    func(**{k: (v[0] if isinstance(v, (list, tuple)) else v) for k, v in controls.items()})
    return None


def stage_comparison(summary, stages: list[str], priors, baselines: list[str]):
    """ClinicalBLIP's stage comparison from its aggregation's summary: per stage and prior, bars with their
    intervals, the image-shuffled control, the oracle-leak arm and the baselines as lines, in three panels
    (abnormal-only CE-F1, the share of reports naming a finding, METEOR). Returns the figure."""
    # imported here: heavy: figures only
    import matplotlib

    matplotlib.use("Agg")
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    panels = (("ce13_micro_f1", "Abnormal-only CE micro-F1 (13 observations)"), ("abnormal_share", "Share of reports naming a finding"),
              ("meteor", "METEOR (pycocoevalcap)"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    model = summary[(summary.prior.isin(priors)) & ~summary.system.str.endswith("image-shuffled control")]
    shuffled = summary[(summary.prior.isin(priors)) & summary.system.str.endswith("image-shuffled control")]
    stages = [s for s in stages if s in set(model.stages)]
    width = 0.38
    for ax, (key, label) in zip(axes, panels):
        for j, prior in enumerate(priors):
            m = model[model.prior == prior].set_index("stages").reindex(stages)
            sh = shuffled[shuffled.prior == prior].set_index("stages").reindex(stages)
            x = np.arange(len(stages)) + (j - 0.5) * width
            ax.bar(x, m[key], width, color=f"C{j}", label=f"model, prior: {prior}",
                   yerr=[m[key] - m[f"{key}_lo"], m[f"{key}_hi"] - m[key]], capsize=3)
            ax.plot(x, sh[key], "v", color="black", mfc="white", ms=8, ls="", label="the same model, image-shuffled")
        leak = summary[(summary.prior == "oracle-leak") & ~summary.system.str.endswith("image-shuffled control")]
        for _, r in leak.iterrows():
            if r.stages in stages:
                ax.plot(stages.index(r.stages), r[key], "r*", ms=14, label="oracle-leak prior (LEAKAGE), stage1+2")
        for i, name in enumerate(baselines):
            b = summary[summary.system == name]
            if not b.empty and not np.isnan(b.iloc[0].get(key, np.nan)):
                ax.axhline(b.iloc[0][key], color=("0.3", "C3", "0.55", "green")[i], ls=("--", "-", ":", "-.")[i], lw=1.2, label=name)
        ax.set_xticks(np.arange(len(stages)))
        ax.set_xticklabels(stages)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("Training stages")
        ax.set_ylabel("Test value (95 % interval)")
    h, lab = axes[0].get_legend_handles_labels()
    for a in axes[1:]:
        h2, l2 = a.get_legend_handles_labels()
        h, lab = h + h2, lab + l2
    uniq = dict(zip(lab, h))
    fig.legend(uniq.values(), uniq.keys(), fontsize=8, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.14))
    fig.suptitle("ClinicalBLIP, tiny profile, test split: bars pool the runs over zoo builds and seeds, whiskers are 95 % "
                 "intervals over builds, runs and studies", fontsize=10)
    fig.tight_layout()
    return fig


def answer_explorer(ds, pools: dict[str, list[dict]], answer, prompt):
    """Pick a sample of a task's pool, see its image, its prompt (`prompt(sample)`), the model's answer
    (`answer(sample)`) with the boxes it writes drawn, and the reference: a widget in a live kernel, the first
    sample of the first pool elsewhere."""
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt

    pools = {task: pool for task, pool in pools.items() if pool}

    def show(i=0, task=None):
        pool = pools[task or next(iter(pools))]
        s = pool[i % len(pool)]
        text = answer(s)
        fig, ax = plt.subplots(figsize=(3.5, 3.5))
        ax.imshow(ds.images[s["image_index"]], cmap="gray")
        ax.set_axis_off()
        draw_grid_boxes(ax, parse_boxes(text), ds.image_size, PREDICTION_COLOR)
        plt.show()
        print("prompt:", prompt(s), "\nmodel:", text, "\nreference:", s["answer"])

    return interactive_or_static(show, {"i": (0, 50), "task": list(pools)})


def pareto_front(values) -> np.ndarray:
    """For points sorted by cost, which are on the front: each better than every cheaper point."""
    best, keep = -np.inf, []
    for v in values:
        keep.append(bool(v > best))
        best = max(best, v)
    return np.array(keep, dtype=bool)


def recipe_fronts(rows, metrics: list[str], recipes: list[str], budgets: list[str], x: str, xlabel: str, title: str):
    """One panel per metric (`rows`: recipe, budget, metric, test, ci_lo, ci_hi, image_shuffled, text_prior and the
    cost `x`, with `x_lo` / `x_hi` unless it is `trainable_params`, drawn as one slot per budget): each recipe's test
    value against its cost, joined along its front (a budget no better than a cheaper one is left off the line), its
    image-shuffled control (x) and the text-only prior (dotted). The last panel holds the legend."""
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 3, figsize=(11, 6.4), squeeze=False)
    axes = grid.ravel()
    for ax, metric in zip(axes, metrics):
        part = rows[rows.metric == metric]
        for k, recipe in enumerate(recipes):
            pts = part[part.recipe == recipe].sort_values(x)
            if not len(pts):
                continue
            if x == "trainable_params":  # matched within 10 %: one slot per budget, the recipes side by side in it
                at = pts.budget.map({b: j for j, b in enumerate(budgets)}).to_numpy() + (k - (len(recipes) - 1) / 2) * 0.15
                xerr = None
            else:
                at, xerr = pts[x].to_numpy(), [pts[x] - pts[x + "_lo"], pts[x + "_hi"] - pts[x]]
            ax.errorbar(at, pts.test, yerr=[pts.test - pts.ci_lo, pts.ci_hi - pts.test], xerr=xerr, marker="o",
                        capsize=3, ls="none", color=f"C{k}", label=recipe)
            front = pareto_front(pts.test.to_numpy())
            ax.plot(at[front], pts.test[front], color=f"C{k}")
            ax.scatter(at, pts.image_shuffled, marker="x", color=f"C{k}", alpha=0.6)
        if len(part):
            ax.axhline(part.text_prior.iloc[0], color="0.4", ls=":", lw=1)
        if x == "trainable_params":
            counts = part.groupby("budget").trainable_params
            ax.set_xticks(range(len(budgets)), [f"{b}\n{counts.min()[b] / 1000:.0f}k-{counts.max()[b] / 1000:.0f}k"
                                                if b in counts.groups else b for b in budgets])
            ax.set_xlim(-0.5, len(budgets) - 0.5)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
    for ax in grid[:, 0]:
        ax.set_ylabel("test value (95 % interval)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [plt.Line2D([], [], marker="x", ls="", color="0.3"), plt.Line2D([], [], ls=":", color="0.4")]
    labels += ["image-shuffled control", "text-only prior"]
    for ax in axes[len(metrics):]:
        ax.axis("off")
    axes[-1].legend(handles, labels, loc="center", fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
