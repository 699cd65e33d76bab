"""Benchmarks that write JSON and a Markdown table to results/benchmarks/.

    python benchmarks/run.py            # CPU: SynthCXR-IU rendering, tiny MedBLIP training step
                                         # (medlib's path vs a plain Hugging Face loop), the tiny
                                         # zoo built from nothing, the committed arms' durations

medlib's training path differs from the plain loop in two ways that do not change the loss:
the frozen ViT's features are computed once and reused, and logits are computed only at the
answer positions instead of over the full vocabulary at every position.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medlib import fileio  # noqa: E402
from medlib.provenance import package_versions  # noqa: E402
from medlib.tables import to_markdown  # noqa: E402


def bench_render(image_size: int = 128) -> dict:
    import tempfile

    from medlib.data import synthcxr

    with tempfile.TemporaryDirectory() as tmp:
        import os

        old = os.environ.get("MEDLIB_CACHE")
        os.environ["MEDLIB_CACHE"] = tmp
        try:
            t = time.perf_counter()
            ds = synthcxr.build(image_size=image_size, progress=False)
            seconds = time.perf_counter() - t
        finally:
            if old is None:
                os.environ.pop("MEDLIB_CACHE")
            else:
                os.environ["MEDLIB_CACHE"] = old
    return {"name": f"render SynthCXR-IU ({image_size} px, all studies)", "studies": len(ds.studies), "seconds": round(seconds, 2),
            "studies_per_s": round(len(ds.studies) / seconds, 1)}


def bench_medblip_step(batch_size: int = 32, steps: int = 10, image_size: int = 128) -> dict:
    from medlib.models import medblip

    torch.manual_seed(0)
    cfg = medblip.tiny_config(2000, image_size, image_token_id=5)
    model = medblip.build(cfg)
    medblip.set_trainable(model, 0.3125)
    q = cfg.num_query_tokens
    ids = torch.randint(10, 2000, (batch_size, q + 16))
    ids[:, :q] = 5
    labels = ids.clone()
    labels[:, : q + 13] = -100  # a 3-token answer after the prompt
    mask = torch.ones_like(ids)
    px = torch.randn(batch_size, 3, image_size, image_size)
    params = [p for p in model.parameters() if p.requires_grad]

    def plain():
        return model(pixel_values=px, input_ids=ids, attention_mask=mask, labels=labels).loss

    with torch.no_grad():
        feats = model.vision_model(pixel_values=px).last_hidden_state

    def ours():
        return medblip.lm_loss(model, feats, ids, mask, labels)

    out = {}
    for name, fn in (("plain HF loop", plain), ("medlib", ours)):
        opt = torch.optim.AdamW(params, lr=1e-4)
        losses = []
        for i in range(steps + 2):
            if i == 2:
                t = time.perf_counter()
            loss = fn()
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        dt = (time.perf_counter() - t) / steps
        out[name] = {"samples_per_s": round(batch_size / dt, 1), "s_per_step": round(dt, 4)}
    # Same result: the first-step loss of both paths on the same weights and batch.
    torch.manual_seed(0)
    fresh = medblip.build(cfg)
    with torch.no_grad():
        a = fresh(pixel_values=px, input_ids=ids, attention_mask=mask, labels=labels).loss.item()
        b = medblip.lm_loss(fresh, fresh.vision_model(pixel_values=px).last_hidden_state, ids, mask, labels).item()
    return {"name": f"tiny MedBLIP training step (batch {batch_size}, ratio 0.3125, CPU)",
            "plain_samples_per_s": out["plain HF loop"]["samples_per_s"], "medlib_samples_per_s": out["medlib"]["samples_per_s"],
            "speedup": round(out["medlib"]["samples_per_s"] / out["plain HF loop"]["samples_per_s"], 2),
            "first_loss_plain": a, "first_loss_medlib": b, "loss_abs_diff": abs(a - b)}


def bench_zoo(image_size: int = 128) -> list[dict]:
    """SynthCXR-IU and every zoo built from nothing in a throwaway cache, as a user builds a zoo other than the
    shipped one (`medlib zoo build --zoo-seed N`: MiniGPT-Med without its in-domain grounding stage, which only
    build 0's arms start from): what a first run on such a build pays before any arm runs."""
    import os
    import tempfile

    from medlib.data.synthcxr import build
    from medlib.zoo import local_builds
    from medlib.zoo.adaptation import build_adaptation_zoo
    from medlib.zoo.clinicalblip import build_clinicalblip_zoo
    from medlib.zoo.medblip import build_medblip_zoo
    from medlib.zoo.minigpt_med import build_minigpt_zoo

    parts = (("build SynthCXR-IU (data, cache)", lambda: build(image_size=image_size, progress=False)),
             ("tiny zoo: tokenizer, BLIP-2 ViT, 16-layer OPT, Q-Former", lambda: build_medblip_zoo(image_size=image_size, progress=False)),
             ("tiny zoo: MiniGPT-Med EVA ViT and LLaMA, EVA's second stage, general grounding stage",
              lambda: build_minigpt_zoo(image_size=image_size, progress=False, in_domain=False)),
             ("tiny zoo: ClinicalBLIP InstructBLIP alignment", lambda: build_clinicalblip_zoo(image_size=image_size, progress=False)),
             ("tiny zoo: notebook 04's shared backbone (OPT on box text)", lambda: build_adaptation_zoo(image_size=image_size, progress=False)))
    previous = os.environ.get("MEDLIB_CACHE")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, local_builds():  # built here, not read from the shipped zoo
        os.environ["MEDLIB_CACHE"] = tmp
        try:
            for name, run in parts:
                t = time.perf_counter()
                run()
                rows.append({"name": name, "seconds": round(time.perf_counter() - t, 1)})
        finally:
            if previous is None:
                os.environ.pop("MEDLIB_CACHE")
            else:
                os.environ["MEDLIB_CACHE"] = previous
    rows.append({"name": "tiny zoo, every paper and notebook 04 (from nothing)", "seconds": round(sum(r["seconds"] for r in rows[1:]), 1)})
    return rows


def reproduce_durations(results: Path = ROOT / "results") -> list[dict]:
    """Arm time of the committed runs per experiment and profile (from their run.json). `medlib reproduce`
    runs two arms at once, so its wall time is about half the arm time, plus building data and the zoo."""
    import json

    rows = {}
    for f in results.glob("*/*/*/run.json"):
        rec = json.loads(f.read_text())
        if rec.get("train_info", {}).get("status") != "finished":
            continue
        key = (rec["run_info"]["experiment"], rec["run_info"]["profile"])
        row = rows.setdefault(key, {"name": f"{key[0]} ({key[1]}) committed arms", "arms": 0, "arm_minutes": 0.0})
        row["arms"] += 1
        row["arm_minutes"] += rec["run_info"]["duration_s"] / 60
    return [{**r, "arm_minutes": round(r["arm_minutes"], 1), "wall_minutes_at_2_jobs": round(r["arm_minutes"] / 2, 1)}
            for r in rows.values()]


def _is_zoo_row(row: dict) -> bool:
    return row["name"].startswith(("tiny zoo", "build SynthCXR-IU"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--durations-only", action="store_true",
                        help="re-read the committed arms' durations and keep the other measured rows of cpu.json")
    parser.add_argument("--zoo-only", action="store_true",
                        help="build the zoo from nothing, re-read the durations, keep the other measured rows of cpu.json")
    args = parser.parse_args(argv)
    if args.durations_only or args.zoo_only:
        import json

        old = json.loads((args.out / "cpu.json").read_text())["results"]
        kept = [r for r in old if not r["name"].endswith("committed arms") and not (args.zoo_only and _is_zoo_row(r))]
        rows = [*kept, *(bench_zoo() if args.zoo_only else []), *reproduce_durations()]
    else:
        rows = [bench_render(), bench_medblip_step(), *bench_zoo(), *reproduce_durations()]
    record = {"machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
              "versions": package_versions(), "results": rows}
    fileio.write_json(args.out / "cpu.json", record)
    import pandas as pd

    table = pd.DataFrame(rows)
    fileio.write_text(args.out / "cpu.md", "# CPU benchmarks\n\nCommand: `python benchmarks/run.py`. Machine: "
                      f"{record['machine']['platform']}, {record['machine']['cpu_threads']} threads.\n\n" + to_markdown(table, floatfmt=".4g"))
    print(to_markdown(table, floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
