"""The text after the options of ``iha --help`` and of each ``iha COMMAND --help``: what the main
arguments are, examples (one command a line; each parses with its own command's parser, which a
test checks) and the exit codes.

One grammar for every command's main argument:

* ``MODEL``: anything that loads as a model: an ``iha train`` run directory, its checkpoints
  directory or one checkpoint, or (where the command also takes one) a Hugging Face model.
* ``RUN``: an ``iha train`` run directory whose logs are read (``iha plot``).
* ``CONFIG``: a training config: a TOML/YAML file, a preset name of configs/ or a run directory.
* ``SRC`` / ``DST``: what a command reads and the directory it writes.
"""

from __future__ import annotations

GRAMMAR = """\
arguments:
  MODEL    an iha train run directory, its checkpoints directory or one checkpoint (iha eval
           also takes a Hugging Face model directory)
  RUN      an iha train run directory whose logs are read
  CONFIG   a config file (TOML/YAML), a preset name of configs/ or a run directory
  SRC DST  what a command reads, the directory it writes"""

# name -> epilog; iha lm-eval has none: 'iha lm-eval --help' is lm_eval's own help
EPILOGS: dict[str, str] = {
    "iha": f"""\
{GRAMMAR}

examples:
  iha train cpu-text --set data.path="docs/*.md"    # a byte-level LM on your .txt/.md files
  iha generate runs/cpu-text --prompt "The layer" --temperature 0.7
  iha describe paper-2.4b-swiglu paper-2.4b-mlp     # parameters and FLOPs of the 2.4B readings
  iha theory
  iha eval gsm8k runs/sft --data gsm8k_test.jsonl --limit 50
  iha convert path/to/llama llama-iha --num-pseudo-heads 2
  iha lm-eval --model iha --model_args pretrained=runs/sft --tasks gsm8k

Run 'iha COMMAND --help' for a command's options, examples and exit codes.
exit codes: 0 done, 1 a check or stage failed, 2 bad arguments or input (each command's help
says which).
""",
    "train": """\
CONFIG is a TOML/YAML file, a preset name from configs/ (e.g. cpu-demo: synthetic recall;
cpu-text: a byte-level LM on text files; paper-2.4b), or a run directory (its saved config.json;
the run continues there with --resume).

examples:
  iha train cpu-demo
  iha train cpu-text --set data.path="docs/*.md" --set train.max_steps=300
  iha train configs/cpu-demo.toml --set train.max_steps=50 --set model.attention_variant=global
  iha train runs/cpu-demo --resume
  torchrun --nproc_per_node 2 -m iha train cpu-demo --set distributed.strategy=fsdp

exit codes: 0 done, 2 bad config or data, run directory in use by another process, a resume
that would change the model/data/batches, or no intact checkpoint (nothing written), 3 non-finite
loss (last good checkpoint kept), 128+N stopped by signal N after saving a checkpoint.
With --resume, changed optimizer/schedule keys apply from the saved step (see docs/training.md).
""",
    "generate": """\
Each --prompt is sampled with its own seed, SEED + i for the i-th prompt (from 0): a prompt given
twice gets two samples, and prompt i alone with --seed SEED+i gives its sample again. With several
prompts, each output starts with a '### prompt i/n (seed S)' line.

examples:
  iha generate runs/cpu-text --prompt "The layer"
  iha generate runs/cpu-text --prompt "Attention" --prompt "A head" --seed 1 --top-k 20
  iha generate runs/cpu-text/checkpoints/step_00000250 --prompt "The" --temperature 0

exit codes: 0 done, 2 bad arguments, no loadable checkpoint, or a prompt outside the vocabulary.
""",
    "describe": """\
CONFIG is a model preset (iha describe --list), a config file or preset of configs/, or a run
directory; several are described one after the other.

examples:
  iha describe
  iha describe paper-2.4b-swiglu paper-2.4b-mlp
  iha describe cpu-text --json
  iha describe tiny --set model.num_pseudo_heads=4 --seq-len 4096
  iha describe --list

exit codes: 0 done, 2 unknown preset, unreadable config or a bad --set/--seq-len.
""",
    "plot": """\
examples:
  iha plot runs/cpu-demo
  iha plot runs/cpu-demo runs/cpu-demo-mha --labels IHA,MHA --out runs/compare --smooth 0.9

exit codes: 0 done, 2 a run without metrics or bad arguments.
""",
    "theory": """\
examples:
  iha theory
  iha theory --polynomial-k 4 --cpm3-n-max 4 7 --sequences 32 --seed 1

exit codes: 0 every check holds, 1 a check failed, 2 bad arguments.
""",
    "reproduce": """\
examples:
  iha reproduce synthetic --quick
  iha reproduce lm --quick --workers 2
  iha reproduce synthetic --full --workers 2 --resume
  iha reproduce synthetic --report-only --out results/synthetic/full

exit codes: 0 done (the report names every experiment's outcome), 2 bad arguments.
""",
    "demo": """\
examples:
  iha demo
  iha demo --workers 1 --resume

exit codes: 0 done, 2 bad arguments.
""",
    "eval": """\
BENCHMARK is one of ruler, gsm8k, math500, humaneval, mbpp, paper-pretrained, paper-sft.

examples:
  iha eval gsm8k runs/sft --data gsm8k_test.jsonl --n-samples 16 --temperature 0.6
  iha eval math500 runs/sft --limit 50
  iha eval ruler runs/long --lengths 4096 8192 16384 --limit 100
  iha eval mbpp runs/sft --n-samples 16 --temperature 0.6
  iha eval humaneval runs/base --temperature 0
  iha eval paper-pretrained runs/base --gsm8k gsm8k.jsonl --math500 math500.jsonl

exit codes: 0 done, 2 bad arguments, unreadable data or model, or a missing dependency.
""",
    "convert": """\
examples:
  iha convert path/to/llama llama-iha --num-pseudo-heads 2
  iha convert path/to/llama llama-iha-paper --mode paper --layers 0,1 --dtype bfloat16

exit codes: 0 converted (the logit check printed), 2 bad arguments, a SRC that is not a
convertible checkpoint or a DST that would overwrite it (nothing written).
""",
    "convert-report": """\
examples:
  iha convert-report
  iha convert-report --model path/to/llama --text essay.txt --num-pseudo-heads 2

exit codes: 0 done, 2 bad arguments.
""",
    "bench": """\
examples:
  iha bench
  iha bench --smoke
  iha bench --suite core window --threads 1 2 --repeats 7
  iha bench --suite memory --json bench.json --markdown bench.md

exit codes: 0 done, 2 bad arguments or --device cuda without CUDA.
""",
    "export": """\
examples:
  iha export runs/cpu-text hf/cpu-text
  iha export runs/sft/checkpoints/step_00001000 hf/sft --tokenizer path/to/tokenizer

exit codes: 0 written, 2 no loadable checkpoint or bad arguments.
""",
    "long-context": """\
examples:
  iha long-context
  iha long-context --rope-type linear --pretrain-steps 48 --limit 4

exit codes: 0 done (the table printed), 1 a stage failed, 2 bad arguments.
""",
}
