"""medlib's training path against a plain Hugging Face loop on the paper-size models (random weights,
nothing downloaded), in one process on identical batches; writes JSON and a Markdown table.

    python benchmarks/gpu.py                      # on a GPU: results/benchmarks/gpu.{json,md}
    python benchmarks/gpu.py --scale small --out /tmp/b   # the same code on small configs (CPU check)

Cases: MedBLIP (BLIP-2 OPT-2.7B), MiniGPT-Med (EVA ViT-g + LLaMA-2-7B), ClinicalBLIP (InstructBLIP
Vicuna-7B, stage 2). The plain loop is what a user writes by hand: fp32 weights under bf16 autocast, the whole model run for
every sample (the frozen image encoder included), logits over the full vocabulary at every position,
a non-fused AdamW. medlib's path is what the notebooks run: frozen weights in bf16, the frozen image
encoder's features computed once per image and reused (in a sweep, once for all arms), logits only
where there is a label, fused AdamW. FLOPs are counted per step by `torch.utils.flop_counter` on what
each path executes; utilisation is against a bf16 matmul roof measured in the same process.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medlib import fileio  # noqa: E402
from medlib.models.common import frozen_to_bf16  # noqa: E402
from medlib.provenance import package_versions  # noqa: E402
from medlib.tables import to_markdown  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def sync():
    if CUDA:
        torch.cuda.synchronize()


def matmul_roof(n: int = 8192, iters: int = 20) -> float:
    """Measured bf16 matrix-multiply throughput (FLOP/s) on this device."""
    n = n if CUDA else 512
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync()
    return 2 * n**3 * iters / (time.perf_counter() - t)


# -- the three architectures -----------------------------------------------------------------------

def medblip_case(scale: str, batch: int, text_tokens: int):
    from medlib.models import medblip

    def build():
        cfg = medblip.paper_config() if scale == "paper" else medblip.tiny_config(1000, 224, image_token_id=5)
        cfg.image_token_index = 5
        torch.manual_seed(0)
        with DEVICE:
            model = medblip.Blip2ForConditionalGeneration(cfg)
        medblip.set_trainable(model, 0.3125)
        return model

    q = 32 if scale == "paper" else 8
    g = torch.Generator().manual_seed(1)
    vocab = 50000 if scale == "paper" else 1000
    ids = torch.randint(10, vocab, (batch, q + text_tokens), generator=g)
    ids[:, :q] = 5
    labels = ids.clone()
    labels[:, : q + text_tokens - 4] = -100  # MedBLIP's answers are short: 3 words and </s>
    batch_ = {"pixel_values": torch.randn(batch, 3, 224, 224, generator=g), "input_ids": ids,
              "attention_mask": torch.ones_like(ids), "labels": labels}

    def plain_loss(model, b):
        return model(**b).loss

    def encode_images(model, b):
        with torch.no_grad():
            return model.vision_model(pixel_values=b["pixel_values"].to(model.dtype if not CUDA else torch.bfloat16)).last_hidden_state

    def medlib_loss(model, b, feats):
        return medblip.lm_loss(model, feats, b["input_ids"], b["attention_mask"], b["labels"])

    return {"name": "MedBLIP: BLIP-2 OPT-2.7B, ratio 0.3125" + ("" if scale == "paper" else " (small config)"), "build": build, "batch": batch_, "plain_loss": plain_loss,
            "encode_images": encode_images, "medlib_loss": medlib_loss, "tokens": batch * (q + text_tokens)}


def minigpt_case(scale: str, batch: int, text_tokens: int):
    from transformers import LlamaForCausalLM

    from medlib.data.synthcxr import build as build_data
    from medlib.experiments import minigpt_med as exp
    from medlib.models import minigpt_med as mg
    from medlib.zoo import local_tokenizer

    tok = local_tokenizer()
    side = 448 if scale == "paper" else 64

    def build():
        torch.manual_seed(0)
        with DEVICE:
            llm = LlamaForCausalLM(mg.llama_paper_config() if scale == "paper" else mg.llama_tiny_config(len(tok)))
            vit = mg.vit_paper(side) if scale == "paper" else mg.vit_tiny(side)
            model = mg.MiniGPTMed(vit, llm)
        mg.freeze_for_training(model, lora_r=64, lora_alpha=16)
        return model

    ds = build_data(image_size=128, progress=False)
    reports = [s.report_clean for s in ds.studies if len(s.report_clean.split()) > 60][:batch]
    answers = [tok.decode(tok(" " + r, add_special_tokens=False)["input_ids"][:text_tokens]).strip() for r in reports]
    g = torch.Generator().manual_seed(1)
    batch_ = {"pixel_values": torch.randn(batch, 3, side, side, generator=g), "instructions": [exp.REPORT_INSTRUCTION] * batch,
              "answers": answers}

    def plain_loss(model, b):
        img = model.image_tokens(b["pixel_values"])
        x, mask, labels = mg.splice(model, tok, img, b["instructions"], b["answers"])
        return model.llm(inputs_embeds=x, attention_mask=mask, labels=labels).loss

    def encode_images(model, b):
        return model.vit_features(b["pixel_values"])

    loss = exp.make_loss(tok)

    def medlib_loss(model, b, feats):
        return loss(model, {"items": [("feat", f) for f in feats], "instructions": b["instructions"], "answers": b["answers"]})[0]

    return {"name": "MiniGPT-Med: EVA ViT-g 448 + LLaMA-2-7B, LoRA r=64" + ("" if scale == "paper" else " (small config)"), "build": build, "batch": batch_,
            "plain_loss": plain_loss, "encode_images": encode_images, "medlib_loss": medlib_loss,
            "tokens": batch * ((side // 14 if scale == "paper" else side // 16) ** 2 // 4 + text_tokens + 20)}


def clinicalblip_case(scale: str, batch: int, text_tokens: int):
    """InstructBLIP Vicuna-7B in ClinicalBLIP's stage 2 (LoRA r=8 on the LLM's q_proj / v_proj), a
    40-token prompt and a report of `text_tokens`. medlib's path is the notebook's: the model in bf16
    with the adapters in fp32, HF's forward (the Q-Former reads the instruction, and stage 1 trains
    the ViT, so neither is cached)."""
    from medlib.experiments import clinicalblip as exp
    from medlib.models import clinicalblip as cb

    def build():
        cfg = cb.paper_config() if scale == "paper" else cb.tiny_config(1000, 224)
        cfg.image_token_index = 5
        torch.manual_seed(0)
        with DEVICE:
            model = cb.InstructBlipForConditionalGeneration(cfg)
        return cb.start_stage(model, "stage2", r=8, alpha=16)[0]

    q = 32 if scale == "paper" else 8
    prompt = 40
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 30000 if scale == "paper" else 1000, (batch, q + prompt + text_tokens), generator=g)
    ids[:, :q] = 5
    labels = ids.clone()
    labels[:, : q + prompt] = -100
    qids = torch.randint(10, 30000 if scale == "paper" else 1000, (batch, prompt), generator=g)
    batch_ = {"pixel_values": torch.randn(batch, 3, 224, 224, generator=g), "input_ids": ids, "attention_mask": torch.ones_like(ids),
              "labels": labels, "qformer_input_ids": qids, "qformer_attention_mask": torch.ones_like(qids)}

    def plain_loss(model, b):
        return model(**b).loss

    def medlib_loss(model, b, feats):
        return exp.loss_fn(model, b)[0]

    return {"name": "ClinicalBLIP: InstructBLIP Vicuna-7B, stage 2 LoRA r=8" + ("" if scale == "paper" else " (small config)"),
            "build": build, "batch": batch_, "plain_loss": plain_loss, "encode_images": None, "medlib_loss": medlib_loss,
            "tokens": batch * (q + prompt + text_tokens)}


CASES = {"medblip": (medblip_case, 16, 64), "minigpt_med": (minigpt_case, 4, 128), "clinicalblip": (clinicalblip_case, 4, 60)}


# -- measuring ---------------------------------------------------------------------------------------

def to_device(b: dict) -> dict:
    return {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in b.items()}


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure(case: dict, path: str, steps: int) -> dict:
    model = case["build"]()
    b = to_device(case["batch"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else torch.autocast("cpu", enabled=False)
    params = [p for p in model.parameters() if p.requires_grad]
    if path == "medlib":
        if CUDA:
            frozen_to_bf16(model)
        feats, encode_s = None, None
        if case["encode_images"] is not None:
            feats = case["encode_images"](model, b)  # once per image: the sweep's feature cache
            sync()
            t = time.perf_counter()
            case["encode_images"](model, b)
            sync()
            encode_s = time.perf_counter() - t

        def loss_fn():
            return case["medlib_loss"](model, b, feats)
    else:
        encode_s = None

        def loss_fn():
            return case["plain_loss"](model, b)
    opt = torch.optim.AdamW(params, lr=1e-5, fused=CUDA and path == "medlib")

    def step():
        with autocast:
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    losses = [step() for _ in range(2)]  # warm-up; the first losses are compared across paths
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t) / steps
    flops = count_flops(step)
    n = len(case["batch"]["pixel_values"])
    out = {"samples_per_s": n / dt, "tokens_per_s": case["tokens"] / dt, "s_per_step": dt, "flops_per_step": flops,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if CUDA else None, "first_losses": losses,
           "image_encoder_s_per_batch": encode_s}
    return out


def release():
    """Free the last path's model before building the next (the 7B models do not fit twice)."""
    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()


def run_case(name: str, scale: str, steps: int, roof: float) -> dict:
    make, batch, text_tokens = CASES[name]
    case = make(scale, batch, text_tokens)
    plain = measure(case, "plain", steps)
    release()
    ours = measure(case, "medlib", steps)
    release()
    row = {"architecture": case["name"], "batch": batch, "text_tokens": text_tokens}
    for label, m in (("plain", plain), ("medlib", ours)):
        row[f"{label}_samples_per_s"] = round(m["samples_per_s"], 2)
        row[f"{label}_tokens_per_s"] = round(m["tokens_per_s"], 1)
        row[f"{label}_peak_gib"] = None if m["peak_gib"] is None else round(m["peak_gib"], 2)
        row[f"{label}_mfu"] = round(m["flops_per_step"] / m["s_per_step"] / roof, 3)
    row["speedup"] = round(ours["samples_per_s"] / plain["samples_per_s"], 2)
    row["first_loss_plain"], row["first_loss_medlib"] = plain["first_losses"][0], ours["first_losses"][0]
    row["first_loss_rel_diff"] = abs(plain["first_losses"][0] - ours["first_losses"][0]) / abs(plain["first_losses"][0])
    if name == "medblip":
        # MedBLIP's default grid: 36 arms x 3 epochs; the plain loop runs the ViT on every image each
        # epoch of every arm, medlib once. Time saved per 10,000 training images:
        per_image = ours["image_encoder_s_per_batch"] / batch
        row["grid_vit_hours_saved_per_10k_images"] = round((36 * 3 - 1) * per_image * 10_000 / 3600, 2)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["paper", "small"], default="paper")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", nargs="+", choices=list(CASES))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args(argv)
    if args.scale == "paper" and not CUDA:
        parser.error("the paper-size benchmark needs a CUDA GPU; --scale small runs the same code on a CPU")
    roof = matmul_roof()
    rows = [run_case(name, args.scale, args.steps, roof) for name in (args.only or CASES)]
    device = torch.cuda.get_device_name(0) if CUDA else "CPU"
    record = {"device": device, "scale": args.scale, "bf16_matmul_roof_tflops": round(roof / 1e12, 1),
              "versions": package_versions(), "results": rows}
    stem = "gpu" if args.scale == "paper" else f"gpu_{args.scale}"
    fileio.write_json(args.out / f"{stem}.json", record)
    import pandas as pd

    fileio.write_text(args.out / f"{stem}.md", f"# Training path vs a plain loop ({args.scale} size, {device})\n\n"
                      f"Command: `python benchmarks/gpu.py --scale {args.scale}`. Measured bf16 matmul roof: "
                      f"{record['bf16_matmul_roof_tflops']} TFLOP/s.\n\n" + to_markdown(pd.DataFrame(rows), floatfmt=".4g") + "\n")
    print(to_markdown(pd.DataFrame(rows), floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
