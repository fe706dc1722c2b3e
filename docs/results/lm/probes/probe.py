"""Sizing probes for MQAR / NIAH (global only, one process): python probe.py NAME key=value..."""
import json
import os
import sys
import time
from pathlib import Path

import torch

from iha.reproduce.lm import flop_accounting, run_job
from iha.reproduce.lm_plans import LMJob, mqar_experiment, niah_experiment

torch.set_num_threads(1)
kind, label, *rest = sys.argv[1:]
kw = {}
for item in rest:
    k, v = item.split("=")
    kw[k] = float(v) if "." in v or "e-" in v else int(v)
lr = kw.pop("lr")
seed = int(kw.pop("seed", 0))
if kind == "mqar":
    exp = mqar_experiment(kw.pop("width"), kw.pop("pairs"), kw.pop("keys"), kw.pop("steps"), kw.pop("batch"),
                (lr,), **kw)
else:
    n = kw.pop("n")
    exp = niah_experiment(kw.pop("width"), n, (n,), kw.pop("steps"), kw.pop("batch"), (lr,), **kw)
variants = os.environ.get("VARIANTS", "global").split(",")
out = Path(__file__).parent / label
for v in variants:
    steps = flop_accounting(exp)[v]["steps"]
    t = time.time()
    rec = run_job(exp, LMJob(exp.name, v, lr, seed), out, steps)
    line = {"label": label, "variant": v, "exp": exp.name, "lr": lr, "steps": steps,
            "batch": exp.batch_size, "sec": round(time.time() - t, 1),
            "val_losses": {k: round(x, 3) for k, x in rec["val_losses"].items()},
            "val_acc": round(rec["val"]["pos_acc"], 3),
            "test": {k: round(x["pos_acc"], 3) for k, x in rec["test"].items()}}
    print(json.dumps(line), flush=True)
    with open(Path(__file__).parent / "probes.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
