"""Run the multi-process tests (2 gloo processes under `accelerate launch`) N times in a row, optionally
beside a CPU-heavy process, and write how many passed to results/benchmarks/multiprocess_stress.json.

    python benchmarks/stress_multiprocess.py --repeats 20 --load
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/test_train.py::test_two_gloo_processes_under_accelerate_launch_match_one_process"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--load", action="store_true", help="keep one core busy with another process meanwhile")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "multiprocess_stress.json")
    args = ap.parse_args()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.load else None
    rows = []
    try:
        for i in range(args.repeats):
            t = time.time()
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TESTS], cwd=ROOT,
                                  capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            rows.append({"repeat": i + 1, "returncode": done.returncode, "summary": last, "seconds": round(time.time() - t, 1)})
            print(f"{i + 1}/{args.repeats}: {last}", flush=True)
    finally:
        if hog:
            hog.kill()
    passed = sum(r["returncode"] == 0 for r in rows)
    record = {"tests": TESTS + " (3 variants)", "repeats": args.repeats, "cpu_load_process": args.load,
              "cpu_count": os.cpu_count(), "all_passed_runs": passed, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{passed}/{args.repeats} runs of all three passed -> {args.out}")
    return 0 if passed == args.repeats else 1


if __name__ == "__main__":
    raise SystemExit(main())
