#!/usr/bin/env python3
"""The study runner: a study file (JSON, configs/studies/) in, trained models, evaluations, one results
table (CSV + Markdown) and gnuplot PNGs out.

    python3 tools/study.py configs/studies/families-tiny.json [more study files] [--bin build] [--dry-run]

Why a Python script: the work is orchestration (build command lines, run build/train and build/infer,
read their JSON, write tables, call gnuplot), none of it numeric or hot; Python 3's standard library
alone does all of it, so any python3 runs it with nothing to install. All model maths stays in the
engine: costs come from `train --describe`, evaluations from `infer ... --json`.

Order of work, so a mistake never costs training time:
  1. every study file is read and every entry resolved (preset, overrides, budgets, seeds) and checked
     by the engine itself (`train --describe --config run.json`); any error names the entry and the
     key and exits 1 before anything is trained;
  2. runs are trained and evaluated one at a time in a content-addressed store (a run's directory name
     is a hash of its model config, training options and evaluation settings), so a finished run is
     skipped (its result.json is the done marker), an interrupted one resumes from its last checkpoint
     (`train --resume`), and two entries with identical settings (llama at equal data and at equal
     FLOPs, or the same baseline in two studies) train once;
  3. each study's table and plots are written under its output directory.
The study file format is described in README.md, section "The study".
"""

import argparse
import csv
import glob
import hashlib
import json
import math
import os
import random
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time

STUDY_KEYS = {"name", "description", "scale", "out", "store", "train", "budgets", "seeds", "evaluations",
              "cost_contexts", "entries", "prune_checkpoints", "launcher", "overrides"}
ENTRY_KEYS = {"name", "preset", "scale", "overrides", "budgets", "seeds", "train"}
BUDGET_KEYS = {"tokens", "flops", "flops_of"}
EVALUATIONS = {
    "ppl": {"data", "context", "bucket", "batch", "max_tokens"},
    "niah": {"haystack", "lengths", "depths", "trials", "batch", "answer_tokens"},
    "mc": {"data", "items", "context_tokens", "choice_tokens", "batch"},
    "bench": {"batch", "prompt", "totals"},
}
# Train options the runner sets itself (from the study's budgets, seeds and its store).
RUNNER_OWNED = {"model", "out", "resume", "steps", "tokens", "flops", "seed", "metrics", "config"}
BOS_EOS = 50256  # GPT-2's <|endoftext|>, the document separator of the default corpus's shards


class StudyError(Exception):
    pass


def log(study_logs, message):
    line = time.strftime("%H:%M:%S ") + message
    print(line, flush=True)
    for path in study_logs:
        with open(path, "a") as out:
            out.write(line + "\n")


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------------
# Engine calls.

def run_binary(arguments, capture=True):
    result = subprocess.run(arguments, capture_output=capture, text=True)
    return result.returncode, (result.stdout or ""), (result.stderr or "")


def error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return lines[-1][len("error: "):] if lines else stderr.strip().splitlines()[-1] if stderr.strip() else "failed"


def describe(train_binary, model_path, seq_len, run_config=None):
    """The cost model's JSON line (params, non_embedding_params, flops_per_token, cache_bytes, ...), or
    raises StudyError with the engine's error message."""
    arguments = [train_binary, "--describe", "--model", model_path, "--seq-len", str(seq_len)]
    if run_config:
        arguments += ["--config", run_config]
    code, out, err = run_binary(arguments)
    if code != 0:
        raise StudyError(error_line(err))
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# Study files: reading and resolving into runs.

def check_keys(where, mapping, allowed):
    if not isinstance(mapping, dict):
        raise StudyError(f"{where}: must be a JSON object")
    for key in mapping:
        if key not in allowed:
            raise StudyError(f"{where}: unknown key \"{key}\" (known: {', '.join(sorted(allowed))})")


def apply_override(config, dotted, value):
    node = config
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part, {}), dict):
            raise StudyError(f"\"{part}\" is not a section")
        node = node.setdefault(part, {})
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def resolve_model(preset_config, overrides):
    config = json.loads(json.dumps(preset_config))
    for key, value in overrides.items():
        apply_override(config, key, value)
    # An explicit pattern wins over a layout in the engine, so a layout override replaces it.
    if "layout" in overrides and "pattern" not in overrides:
        config.pop("pattern", None)
    return config


class Run:
    """One entry x budget x seed: what to train and evaluate, and where."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def load_study(path, repo, train_binary, scratch):
    where = f"study {path}"
    try:
        with open(path) as f:
            study = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise StudyError(f"{where}: {error}")
    check_keys(where, study, STUDY_KEYS)
    for key in ("name", "scale", "train", "budgets", "entries"):
        if key not in study:
            raise StudyError(f"{where}: key \"{key}\" is missing")
    name = study["name"]
    train = study["train"]
    if not isinstance(train, dict):
        raise StudyError(f"{where}: \"train\" must be a JSON object of train options")
    for key in train:
        if key in RUNNER_OWNED:
            raise StudyError(f"{where}: key \"train.{key}\": set by the runner (from budgets, seeds and the store)")
    for key in ("data", "val", "seq_len", "micro_batch"):
        if key not in train:
            raise StudyError(f"{where}: \"train\" needs \"{key}\"")
    budgets = study["budgets"]
    for budget_name, budget in budgets.items():
        check_keys(f"{where}: budget \"{budget_name}\"", budget, BUDGET_KEYS)
        if not ("tokens" in budget) ^ ("flops" in budget) and not ("flops_of" in budget and "tokens" in budget):
            raise StudyError(f"{where}: budget \"{budget_name}\": give \"tokens\", \"flops\", or \"flops_of\" "
                             "(an entry) with \"tokens\"")
        for key in ("tokens", "flops"):
            if key in budget and not (isinstance(budget[key], (int, float)) and budget[key] > 0):
                raise StudyError(f"{where}: budget \"{budget_name}\": key \"{key}\" must be a positive number")
    evaluations = study.get("evaluations", {})
    check_keys(f"{where}: \"evaluations\"", evaluations, set(EVALUATIONS))
    for evaluation, settings in evaluations.items():
        check_keys(f"{where}: evaluation \"{evaluation}\"", settings, EVALUATIONS[evaluation])
    seeds = study.get("seeds", [train.get("seed", 1234)])
    out = os.path.join(repo, study.get("out", f"runs/studies/{name}"))
    store = os.path.join(repo, study.get("store", "runs/studies/store"))

    # Model overrides under every entry's own (e.g. the corpus's vocabulary for presets sized for another).
    study_overrides = study.get("overrides", {})
    if not isinstance(study_overrides, dict):
        raise StudyError(f"{where}: key \"overrides\" must be an object of \"section.key\": value")
    entries = study["entries"]
    names = [entry.get("name") for entry in entries]
    runs, models = [], {}
    for index, entry in enumerate(entries):
        entry_name = entry.get("name", f"#{index + 1}")
        at = f"{where}: entry \"{entry_name}\""
        check_keys(at, entry, ENTRY_KEYS)
        if "name" not in entry:
            raise StudyError(f"{at}: key \"name\" is missing")
        if names.count(entry_name) > 1:
            raise StudyError(f"{at}: key \"name\": the name is used by more than one entry")
        if "preset" not in entry:
            raise StudyError(f"{at}: key \"preset\" is missing")
        scale = entry.get("scale", study["scale"])
        preset = entry["preset"]
        preset_path = preset if preset.endswith(".json") else os.path.join(repo, "configs/models", scale,
                                                                           preset + ".json")
        if not os.path.isfile(preset_path):
            known = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(repo, "configs/models", scale,
                                                                                    "*.json")))
            raise StudyError(f"{at}: key \"preset\": unknown preset \"{preset}\" at scale \"{scale}\"" +
                             (f" (known: {', '.join(known)})" if known else " (no presets at that scale)"))
        with open(preset_path) as f:
            preset_config = json.load(f)
        overrides = entry.get("overrides", {})
        if not isinstance(overrides, dict):
            raise StudyError(f"{at}: key \"overrides\" must be an object of \"section.key\": value")
        overrides = {**study_overrides, **overrides}
        entry_train = dict(train)
        entry_train.update(entry.get("train", {}))
        for key in entry.get("train", {}):
            if key in RUNNER_OWNED:
                raise StudyError(f"{at}: key \"train.{key}\": set by the runner (use budgets and seeds)")
        model = engine_checked_model(at, preset_config, overrides, entry_train, train_binary, scratch)
        check_vocabulary(at, model["config"], entry_train, repo)
        models[entry_name] = model
        entry_budgets = entry.get("budgets", list(budgets))
        entry_seeds = entry.get("seeds", seeds)
        for budget_name in entry_budgets:
            if budget_name not in budgets:
                raise StudyError(f"{at}: key \"budgets\": unknown budget \"{budget_name}\" "
                                 f"(the study has {', '.join(budgets)})")
            for seed in entry_seeds:
                run_name = entry_name
                if len(budgets) > 1:
                    run_name += "@" + budget_name
                if len(seeds) > 1 or len(entry_seeds) > 1:
                    run_name += f"#s{seed}"
                runs.append(Run(study=name, name=run_name, entry=entry_name,
                                preset=os.path.relpath(preset_path, repo), scale=scale, overrides=overrides,
                                budget_name=budget_name, seed=seed, train=entry_train, model=model))

    # Budgets to steps, with the cost model's FLOPs per token at the training context.
    for run in runs:
        budget = budgets[run.budget_name]
        seq_len = int(run.train["seq_len"])
        step_tokens = int(run.train.get("batch_tokens", 0)) or int(run.train["micro_batch"]) * seq_len
        run.flops_per_token = run.model["cost_train"]["flops_per_token"]
        if "tokens" in budget and "flops_of" not in budget:
            steps = math.ceil(budget["tokens"] / step_tokens)
        else:
            if "flops_of" in budget:
                reference = budget["flops_of"]
                if reference not in models:
                    raise StudyError(f"{where}: budget \"{run.budget_name}\": key \"flops_of\": no entry named "
                                     f"\"{reference}\"")
                flops = models[reference]["cost_train"]["flops_per_token"] * budget["tokens"]
            else:
                flops = budget["flops"]
            # The small tolerance makes a reference entry's own FLOP-matched run equal its token run.
            steps = math.ceil(flops / run.flops_per_token / step_tokens - 1e-9)
        run.steps = max(1, steps)
        run.tokens = run.steps * step_tokens
        run.train_flops = run.tokens * run.flops_per_token
    return dict(name=name, path=path, description=study.get("description", ""), out=out, store=store, runs=runs,
                prune_checkpoints=bool(study.get("prune_checkpoints", False)),
                launcher=shlex.split(study.get("launcher", "")),
                evaluations=evaluations, cost_contexts=study.get("cost_contexts", [1024, 2048, 4096, 8192, 16384,
                                                                                   32768]))


def check_vocabulary(at, config, train, repo):
    """The shards' meta.json (written by prepare_data) names their vocabulary; train refuses a model of
    another size, so the study does before anything is trained."""
    for key in ("data", "val"):
        meta_path = os.path.join(repo, os.path.dirname(train[key]), "meta.json")
        if not os.path.isfile(meta_path):
            continue
        with open(meta_path) as f:
            data_vocab = json.load(f).get("vocab_size")
        if data_vocab is not None and data_vocab != config["vocab_size"]:
            raise StudyError(f"{at}: key \"vocab_size\": the model has {config['vocab_size']} ids but "
                             f"{os.path.relpath(meta_path, repo)} says the shards use {data_vocab} "
                             f"(override \"vocab_size\" in the study's or the entry's \"overrides\")")


def engine_checked_model(at, preset_config, overrides, train, train_binary, scratch):
    """The resolved model config, checked by `train --describe` (with the training options too), and
    its costs at the training context and at 8K. Raises StudyError naming the entry and the key."""
    os.makedirs(scratch, exist_ok=True)
    run_config = os.path.join(scratch, "run.json")
    with open(run_config, "w") as f:
        json.dump(train, f)

    def check(config):
        model_path = os.path.join(scratch, "model.json")
        with open(model_path, "w") as f:
            json.dump(config, f)
        try:
            return describe(train_binary, model_path, int(train["seq_len"]), run_config)
        except StudyError as error:  # the scratch files' names mean nothing to the reader
            message = str(error)
            if message.startswith(run_config + ": "):
                raise StudyError(f"{at}: key \"train\": {message[len(run_config) + 2:]}")
            raise StudyError(message.replace(model_path + ": ", ""))

    try:
        config = resolve_model(preset_config, overrides)
    except StudyError as error:
        raise StudyError(f"{at}: key \"overrides\": {error}")
    try:
        cost_train = check(config)
    except StudyError as error:
        if str(error).startswith(f"{at}: key \"train\""):
            raise
        if overrides:
            try:
                check(preset_config)
            except StudyError as without_overrides:
                error, overrides = without_overrides, {}
        if not overrides:
            raise StudyError(f"{at}: the preset or the \"train\" options are rejected: {error}")
        # Name the override that breaks the config: the first that fails applied alone.
        culprit = None
        for key, value in overrides.items():
            try:
                check(resolve_model(preset_config, {key: value}))
            except StudyError:
                culprit = key
                break
        key_text = f"override \"{culprit}\"" if culprit else "key \"overrides\" (together)"
        raise StudyError(f"{at}: {key_text}: {error}")
    model_path = os.path.join(scratch, "model.json")
    with open(model_path, "w") as f:
        json.dump(config, f)
    cost_8k = describe(train_binary, model_path, 8192)
    return dict(config=config, cost_train=cost_train, cost_8k=cost_8k)


# ---------------------------------------------------------------------------------------------------
# Evaluation inputs made from the held-out shards: a haystack text and a cloze multiple-choice set.

def read_shard(path):
    with open(path, "rb") as f:
        header = struct.unpack("<256i", f.read(1024))
        width = {1: "H", 2: "I"}[header[1]]
        count = header[2]
        return list(struct.unpack(f"<{count}{width}", f.read(count * struct.calcsize(width))))


def gpt2_decoder(vocabulary_dir):
    """Token id -> bytes for a GPT-2 vocabulary: encoder.json's strings map printable stand-in
    characters back to bytes (bytes 33-126, 161-172, 174-255 stand for themselves; the others are
    shifted to 256 and up, in byte order)."""
    kept = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    stand_in = {}
    shifted = 0
    for byte in range(256):
        if byte in kept:
            stand_in[chr(byte)] = byte
        else:
            stand_in[chr(256 + shifted)] = byte
            shifted += 1
    with open(os.path.join(vocabulary_dir, "encoder.json")) as f:
        encoder = json.load(f)
    table = {index: bytes(stand_in[c] for c in text) for text, index in encoder.items()}
    return lambda ids: b"".join(table.get(i, b"") for i in ids).decode("utf-8", errors="replace")


def held_out_documents(val_pattern):
    documents, current = [], []
    for path in sorted(glob.glob(val_pattern)):
        for token in read_shard(path):
            if token == BOS_EOS:
                if current:
                    documents.append(current)
                current = []
            else:
                current.append(token)
    if current:
        documents.append(current)
    return documents


def make_haystack(path, documents, decode):
    with open(path, "w") as out:
        out.write("\n\n".join(decode(document) for document in documents))


def make_cloze(path, documents, decode, items, context_tokens, choice_tokens):
    """Held-out documents cut after `context_tokens`; the true next `choice_tokens` against the same
    span of three other documents (a probe on the study's own corpus, not a published benchmark)."""
    rng = random.Random(0)
    usable = [d for d in documents if len(d) >= context_tokens + choice_tokens]
    if len(usable) < 4:
        raise StudyError(f"mc: fewer than 4 held-out documents of {context_tokens + choice_tokens} tokens")
    with open(path, "w") as out:
        for i in range(min(items, len(usable))):
            document = usable[i]
            others = rng.sample([d for j, d in enumerate(usable) if j != i], 3)
            span = slice(context_tokens, context_tokens + choice_tokens)
            choices = [decode(d[span]) for d in [document] + others]
            gold = rng.randrange(4)
            choices[0], choices[gold] = choices[gold], choices[0]
            out.write(json.dumps({"context": decode(document[:context_tokens]), "choices": choices,
                                  "gold": gold}) + "\n")


def evaluation_inputs(study, repo, write):
    """Fills in derived inputs (haystack "val", mc data "val-cloze") with generated files (made when
    `write`; a dry run only names them)."""
    evaluations = json.loads(json.dumps(study["evaluations"]))
    train = study["runs"][0].train
    if "ppl" in evaluations:
        evaluations["ppl"].setdefault("data", train["val"])
    niah, mc = evaluations.get("niah"), evaluations.get("mc")
    needs_haystack = niah is not None and niah.get("haystack", "val") == "val"
    needs_cloze = mc is not None and mc.get("data", "val-cloze") == "val-cloze"
    if not (needs_haystack or needs_cloze):
        return evaluations
    if "tokenizer" not in train:
        raise StudyError(f"study {study['path']}: the haystack \"val\" and mc data \"val-cloze\" are made from "
                         "the validation shards and need \"train\": {\"tokenizer\": GPT-2 vocabulary directory}")
    derived = os.path.join(study["store"], "inputs")
    if write:
        os.makedirs(derived, exist_ok=True)
        documents = held_out_documents(os.path.join(repo, train["val"]))
        decode = gpt2_decoder(os.path.join(repo, train["tokenizer"]))
    if needs_haystack:
        niah["haystack"] = os.path.join(derived, "haystack.txt")
        if write:
            make_haystack(niah["haystack"], documents, decode)
    if needs_cloze:
        items, context, choice = mc.pop("items", 100), mc.pop("context_tokens", 32), mc.pop("choice_tokens", 12)
        mc["data"] = os.path.join(derived, f"cloze_{items}_{context}_{choice}.jsonl")
        if write:
            make_cloze(mc["data"], documents, decode, items, context, choice)
    return evaluations


# ---------------------------------------------------------------------------------------------------
# Running: train, then each evaluation, every stage skipped when its output exists.

def train_options(run):
    options = {k: v for k, v in run.train.items()}
    options.update(steps=run.steps, seed=run.seed)
    options.setdefault("checkpoint_every", max(1, run.steps // 4))
    options.setdefault("keep", 2)
    return options


def fingerprint(run, evaluations):
    # Threads change speed, never results (CPU kernels reduce in fixed orders), so they are left out.
    options = {k: v for k, v in train_options(run).items() if k != "threads"}
    return hashlib.sha256(canonical({"model": run.model["config"], "train": options,
                                     "evaluations": evaluations}).encode()).hexdigest()[:16]


def evaluation_command(infer, kind, settings, checkpoint, device, threads, json_path):
    command = [infer, kind, "--checkpoint", checkpoint, "--device", device, "--json", json_path]
    if threads:
        command += ["--threads", str(threads)]
    for key, value in settings.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        command += ["--" + key.replace("_", "-"), str(value)]
    return command


def execute(run, directory, evaluations, binaries, logs, repo, prune, launcher):
    train_dir = os.path.join(directory, "train")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(run.model["config"], f, indent=2)
    options = train_options(run)
    options.update(model=os.path.join(directory, "model.json"), out=train_dir)
    for key in ("data", "val", "tokenizer"):
        if key in options:
            options[key] = os.path.join(repo, options[key])
    with open(os.path.join(directory, "train.json"), "w") as f:
        json.dump(options, f, indent=2)
    train_done = os.path.join(directory, "train_done.json")
    if not os.path.exists(train_done):
        # A launcher (e.g. "mpirun -np 8 -x NCCL_NVLS_ENABLE=0") runs data parallel; a checkpoint resumes on
        # any number of ranks, so it is not part of a run's identity.
        command = launcher + [binaries["train"], "--config", os.path.join(directory, "train.json")]
        checkpoints = sorted(glob.glob(os.path.join(train_dir, "step_*", "state.json")))
        if checkpoints:
            log(logs, f"resume {run.name} from {os.path.dirname(checkpoints[-1])}")
            command += ["--resume", train_dir]
        else:
            log(logs, f"train {run.name}: {run.steps} steps, {run.tokens} tokens -> {directory}")
        begin = time.time()
        with open(os.path.join(directory, "train.log"), "a") as out:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
        if code != 0:
            raise StudyError(f"run {run.name}: train failed (exit {code}); see {directory}/train.log")
        with open(train_done, "w") as f:
            json.dump({"seconds": time.time() - begin}, f)
    device = run.train.get("device", "cpu")
    for kind, settings in evaluations.items():
        target = os.path.join(directory, f"{kind}.json")
        if os.path.exists(target):
            continue
        log(logs, f"{kind} {run.name}")
        command = evaluation_command(binaries["infer"], kind, settings, train_dir, device,
                                     run.train.get("threads", 0), target + ".partial")
        code, _, err = run_binary(command)
        if code != 0:
            raise StudyError(f"run {run.name}: infer {kind} failed: {error_line(err)}\n  command: "
                             + " ".join(command))
        os.replace(target + ".partial", target)
    result = collect(run, directory, evaluations)
    if prune:  # the table and plots need only the metrics and the evaluations' JSON
        for checkpoint in glob.glob(os.path.join(train_dir, "step_*")):
            shutil.rmtree(checkpoint)
    with open(os.path.join(directory, "result.json.partial"), "w") as f:
        json.dump(result, f, indent=2)
    os.replace(os.path.join(directory, "result.json.partial"), os.path.join(directory, "result.json"))
    return result


def metrics(directory):
    """Per step the last line written (a resumed run rewrites the steps after its checkpoint)."""
    steps, validation = {}, {}
    path = os.path.join(directory, "train", "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                (steps if "loss" in record else validation)[record["step"]] = record
    return [steps[s] for s in sorted(steps)], [validation[s] for s in sorted(validation)]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def collect(run, directory, evaluations):
    steps, validation = metrics(directory)
    seq_len = int(run.train["seq_len"])
    result = {"train_loss": steps[-1]["loss"] if steps else None,
              "val_loss": validation[-1]["val_loss"] if validation else None,
              "train_tokens_per_s": (sum(s["tokens_per_s"] for s in steps[len(steps) // 2:]) /
                                     max(1, len(steps) - len(steps) // 2)) if steps else None,
              "train_seconds": read_json(os.path.join(directory, "train_done.json"))["seconds"]}
    if "ppl" in evaluations:
        ppl = read_json(os.path.join(directory, "ppl.json"))
        result["ppl_context"] = ppl["context"]
        result["ppl_nll"] = ppl["nll"]

        def mean(buckets):
            count = sum(b["count"] for b in buckets)
            return sum(b["nll"] * b["count"] for b in buckets) / count if count else None

        result["nll_within_train_len"] = mean([b for b in ppl["positions"] if b["end"] <= seq_len])
        result["nll_past_train_len"] = mean([b for b in ppl["positions"] if b["begin"] >= seq_len])
        result["positions"] = [[(b["begin"] + b["end"]) / 2, b["nll"]] for b in ppl["positions"]]
    if "niah" in evaluations:
        niah = read_json(os.path.join(directory, "niah.json"))
        result["niah_accuracy"] = niah["accuracy"]
        result["niah_grid"] = [[c["length"], c["depth"], c["accuracy"]] for c in niah["grid"]]
    if "mc" in evaluations:
        mc = read_json(os.path.join(directory, "mc.json"))
        result.update(mc_items=mc["items"], mc_acc=mc["acc"], mc_acc_norm=mc["acc_norm"])
    if "bench" in evaluations:
        bench = read_json(os.path.join(directory, "bench.json"))
        last = bench["results"][-1]
        result.update(bench_total=last["total"], prefill_tokens_per_s=last["prefill_tokens_per_s"],
                      decode_tokens_per_s=last["decode_tokens_per_s"], bench_cache_mib=last["cache_mib"],
                      bench_peak_mib=last["peak_mib"], bench_device=bench["card"])
    return result


# ---------------------------------------------------------------------------------------------------
# The results table.

COLUMNS = [
    # settings
    "study", "run", "entry", "preset", "scale", "overrides", "pattern", "budget", "seed", "seq_len",
    "micro_batch", "lr", "device", "steps", "tokens", "train_flops",
    # costs (train --describe)
    "params", "non_embedding_params", "flops_per_token", "flops_per_token_8k", "cache_mib_8k",
    # figures
    "train_loss", "val_loss", "ppl_context", "nll_within_train_len", "nll_past_train_len", "niah_accuracy",
    "mc_items", "mc_acc", "mc_acc_norm", "bench_total", "prefill_tokens_per_s", "decode_tokens_per_s",
    "bench_cache_mib", "bench_peak_mib", "bench_device", "train_tokens_per_s", "train_seconds", "run_dir",
]
UNITS = {"train_flops": "FLOPs", "flops_per_token": "FLOPs at seq_len", "flops_per_token_8k": "FLOPs at 8192",
         "cache_mib_8k": "MiB bf16", "train_loss": "nats", "val_loss": "nats", "nll_within_train_len": "nats",
         "nll_past_train_len": "nats", "prefill_tokens_per_s": "tok/s", "decode_tokens_per_s": "tok/s",
         "bench_cache_mib": "MiB", "bench_peak_mib": "MiB", "train_tokens_per_s": "tok/s", "train_seconds": "s"}


def table_row(run, result, repo):
    cost, cost_8k = run.model["cost_train"], run.model["cost_8k"]
    row = {"study": run.study, "run": run.name, "entry": run.entry, "preset": run.preset, "scale": run.scale,
           "overrides": canonical(run.overrides) if run.overrides else "", "pattern": cost["pattern"],
           "budget": run.budget_name, "seed": run.seed, "seq_len": run.train["seq_len"],
           "micro_batch": run.train["micro_batch"], "lr": run.train.get("lr", ""),
           "device": run.train.get("device", "cpu"), "steps": run.steps, "tokens": run.tokens,
           "train_flops": run.train_flops, "params": cost["params"],
           "non_embedding_params": cost["non_embedding_params"], "flops_per_token": cost["flops_per_token"],
           "flops_per_token_8k": cost_8k["flops_per_token"], "cache_mib_8k": cost_8k["cache_bytes"] / 2**20,
           "run_dir": os.path.relpath(run.directory, repo)}
    row.update({k: v for k, v in result.items() if k in COLUMNS})
    return row


def formatted(value):
    if value is None:
        return ""
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.4g}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_tables(study, rows, plots, command):
    out = study["out"]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
    settings = COLUMNS[COLUMNS.index("run"):COLUMNS.index("params")]
    costs = ["run"] + COLUMNS[COLUMNS.index("params"):COLUMNS.index("train_loss")]
    figures = ["run"] + COLUMNS[COLUMNS.index("train_loss"):COLUMNS.index("run_dir")]

    def markdown(columns):
        present = [c for c in columns if any(row.get(c) not in (None, "") for row in rows)]
        header = [c + (f" ({UNITS[c]})" if c in UNITS else "") for c in present]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(present)]
        for row in rows:
            lines.append("| " + " | ".join(formatted(row.get(c)).replace("|", "\\|") for c in present) + " |")
        return "\n".join(lines)

    text = [f"# Study {study['name']}", "", study["description"], "",
            f"Produced by `{command}` from `{os.path.relpath(study['path'])}`; every figure below is also in "
            "`results.csv`. Costs are the engine's cost model (`train --describe`, MODEL.md section 7): "
            "FLOPs/token at the training context and at 8192, bf16 cache at 8192.", "",
            "## Settings", "", markdown(settings), "", "## Costs", "", markdown(costs), "",
            "## Figures", "", markdown(figures), "", "## Plots", ""]
    text += [f"![{name}](plots/{name})" for name in plots]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(text) + "\n")


# ---------------------------------------------------------------------------------------------------
# Plots (gnuplot; one script per PNG is kept beside it, so a plot can be restyled and rerun by hand).

def gnuplot_terminal():
    probe = subprocess.run(["gnuplot", "-e", "set terminal pngcairo"], capture_output=True, text=True)
    return "pngcairo size 1100,700 noenhanced font ',10'" if probe.returncode == 0 else "png size 1100,700 noenhanced"


# Sixteen distinguishable series colours (gnuplot's default cycle repeats after eight, and a study can
# have more runs than that); series 9-16 are also dashed.
SERIES_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf", "#000000", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5"]
SERIES_STYLES = "".join(f"set linetype {i + 1} lc rgb '{colour}' dt {1 if i < 8 else 2}\n"
                        for i, colour in enumerate(SERIES_COLOURS)) + f"set linetype cycle {len(SERIES_COLOURS)}\n"


def quoted(text):
    return "'" + str(text).replace("'", "''") + "'"


class Plotter:
    def __init__(self, directory):
        self.directory = directory
        self.data = os.path.join(directory, "data")
        os.makedirs(self.data, exist_ok=True)
        self.terminal = gnuplot_terminal()
        self.written = []

    def series(self, name, rows):
        path = os.path.join(self.data, name + ".dat")
        with open(path, "w") as f:
            for row in rows:
                f.write(" ".join(repr(v) if isinstance(v, float) else str(v) for v in row) + "\n")
        return path

    def plot(self, name, title, xlabel, ylabel, body):
        script = os.path.join(self.data, name + ".gp")
        with open(script, "w") as f:
            f.write(f"set terminal {self.terminal}\nset output {quoted(os.path.join(self.directory, name + '.png'))}\n"
                    f"set title {quoted(title)}\nset xlabel {quoted(xlabel)}\nset ylabel {quoted(ylabel)}\n"
                    "set grid\nset key outside right top\n" + SERIES_STYLES + body + "\n")
        result = subprocess.run(["gnuplot", script], capture_output=True, text=True)
        if result.returncode != 0:
            raise StudyError(f"gnuplot {script}: {result.stderr.strip()}")
        self.written.append(name + ".png")


def safe(name):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def least_squares(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - slope * mx, slope


def distinct_runs(runs, results):
    """Runs that share a directory (identical settings) plot once, under all their names."""
    names, first = {}, {}
    for run, result in zip(runs, results):
        names.setdefault(run.directory, []).append(run.name)
        first.setdefault(run.directory, (run, result))
    return [(" = ".join(names[d]), run, result) for d, (run, result) in first.items()]


def make_plots(study, all_runs, all_results, train_binary):
    plotter = Plotter(os.path.join(study["out"], "plots"))
    name = study["name"]
    distinct = distinct_runs(all_runs, all_results)

    curves = []
    for label, run, _ in distinct:
        steps, _ = metrics(run.directory)
        if steps:
            curves.append((label, plotter.series("loss_" + safe(run.name), [[s["tokens"], s["loss"]] for s in steps])))
    if curves:
        plotter.plot("loss_curves", f"{name}: training loss", "training tokens", "training loss (nats/token)",
                     "plot " + ", ".join(f"{quoted(p)} using 1:2 with lines lw 1.5 title {quoted(r)}" for r, p in curves))

    def validation_nll(result):
        return result.get("nll_within_train_len") or result.get("val_loss")

    pareto = [(label, run, r) for label, run, r in distinct
              if r.get("decode_tokens_per_s") and validation_nll(r) is not None]
    if pareto:
        first = pareto[0][2]
        plotter.plot("pareto", f"{name}: validation NLL against decode throughput (batch "
                     f"{study['evaluations']['bench'].get('batch', 4)}, to {first['bench_total']} tokens, "
                     f"{first.get('bench_device', '')})", "decode throughput (tokens/s)", "validation NLL (nats/token)",
                     "plot " + ", ".join(
                         f"{quoted(plotter.series('pareto_' + safe(run.name), [[r['decode_tokens_per_s'], validation_nll(r)]]))} "
                         f"using 1:2 with points pt 7 ps 1.8 title {quoted(label)}" for label, run, r in pareto))

    families, seen = [], set()
    for _, run, _ in distinct:
        key = canonical(run.model["config"])
        if key in seen:
            continue
        seen.add(key)
        model_path = os.path.join(run.directory, "model.json")
        points = [[context, describe(train_binary, model_path, context)["cache_bytes"] / 2**20]
                  for context in study["cost_contexts"]]
        families.append((run.entry, plotter.series("cache_" + safe(run.entry), points)))
    if families:
        plotter.plot("cache_vs_context", f"{name}: inference cache per sequence (cost model, bf16)",
                     "context length (tokens)", "cache (MiB)",
                     "set logscale x 2\nset logscale y 10\nplot " + ", ".join(
                         f"{quoted(p)} using 1:2 with linespoints lw 1.5 title {quoted(e)}" for e, p in families))

    for label, run, result in distinct:
        grid = result.get("niah_grid")
        if not grid:
            continue
        lengths = sorted({g[0] for g in grid})
        depths = sorted({g[1] for g in grid})
        cells = [[lengths.index(l), depths.index(d), a] for l, d, a in grid]
        path = plotter.series("niah_" + safe(run.name), cells)
        xtics = ", ".join(f"'{l}' {i}" for i, l in enumerate(lengths))
        ytics = ", ".join(f"'{round(d * 100)}%%' {i}" for i, d in enumerate(depths))  # tic labels are formats
        plotter.plot("niah_" + safe(run.name), f"{name} / {label}: needle-in-a-haystack accuracy",
                     "haystack length (tokens)", "needle depth (% of the haystack)",
                     f"set xtics ({xtics})\nset ytics ({ytics})\nset cbrange [0:1]\nset cblabel 'accuracy (fraction)'\n"
                     "set palette defined (0 '#b2182b', 0.5 '#f7f7f7', 1 '#2166ac')\nunset grid\n"
                     f"plot {quoted(path)} using 1:2:3 with image notitle, "
                     f"{quoted(path)} using 1:2:(sprintf('%.0f', $3 * 100).'%') with labels notitle")

    positions = [(label, run, r) for label, run, r in distinct if r.get("positions")]
    if positions:
        seq_len = int(positions[0][1].train["seq_len"])
        plotter.plot("position_loss", f"{name}: loss by position (trained at {seq_len} tokens)",
                     "position in the window (tokens, bucket centre)", "NLL (nats/token)",
                     f"set arrow from {seq_len}, graph 0 to {seq_len}, graph 1 nohead dt 2\n"
                     f"set label 'training length' at {seq_len}, graph 0.95 offset 0.5, 0\nplot " + ", ".join(
                         f"{quoted(plotter.series('positions_' + safe(run.name), r['positions']))} using 1:2 "
                         f"with linespoints title {quoted(label)}" for label, run, r in positions))

    points = [(run, result["val_loss"]) for _, run, result in distinct if result.get("val_loss")]
    if len({run.train_flops for run, _ in points}) >= 2:
        ordered = sorted(points, key=lambda p: p[0].train_flops)
        frontier, best = [], float("inf")
        for run, loss in ordered:
            if loss < best:
                frontier.append((run, loss))
                best = loss
        fitted = frontier if len({run.train_flops for run, _ in frontier}) >= 2 else ordered
        intercept, slope = least_squares([math.log10(r.train_flops) for r, _ in fitted],
                                         [math.log10(l) for _, l in fitted])
        by_entry = {}
        for run, loss in points:
            by_entry.setdefault(f"{run.entry} ({run.scale})", []).append([run.train_flops, loss])
        plotter.plot("loss_vs_flops", f"{name}: validation loss against training compute; "
                     f"compute-optimal fit L = {10 ** intercept:.3g} C^{slope:.4f}",
                     "training compute (FLOPs, MODEL.md section 7)", "validation loss (nats/token)",
                     f"set logscale x 10\nset logscale y 10\nf(x) = 10**({intercept!r}) * x**({slope!r})\nplot " +
                     ", ".join(f"{quoted(plotter.series('flops_' + safe(e), sorted(v)))} using 1:2 with points pt 7 "
                               f"ps 1.5 title {quoted(e)}" for e, v in by_entry.items()) +
                     f", f(x) with lines lw 2 dt 2 title 'fit over the lower envelope ({len(fitted)} points)'")
    return plotter.written


# ---------------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", help="study files (JSON), run in order")
    parser.add_argument("--bin", default="build", help="directory with the train and infer binaries")
    parser.add_argument("--dry-run", action="store_true", help="check the studies and print the plan; train nothing")
    args = parser.parse_args()
    repo = os.getcwd()
    binaries = {name: os.path.join(args.bin, name) for name in ("train", "infer")}
    command = "python3 tools/study.py " + " ".join(sys.argv[1:])
    scratch = tempfile.mkdtemp(prefix="braid_study_check_")
    try:
        for name, path in binaries.items():
            if not os.access(path, os.X_OK):
                raise StudyError(f"{path}: not found (build it: make BUILD={args.bin} {path})")
        try:
            studies = [load_study(path, repo, binaries["train"], scratch) for path in args.studies]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for study in studies:
            study["evaluations"] = evaluation_inputs(study, repo, not args.dry_run)
            for run in study["runs"]:
                run.directory = os.path.join(study["store"], safe(os.path.basename(run.preset)[:-5]) + "-" +
                                             fingerprint(run, study["evaluations"]))
        for study in studies:
            os.makedirs(study["out"], exist_ok=True)
            logs = [os.path.join(study["out"], "study.log")]
            log(logs, f"study {study['name']}: {len(study['runs'])} runs ({command})")
            for run in study["runs"]:
                done = os.path.exists(os.path.join(run.directory, "result.json"))
                log(logs, f"  {run.name}: {run.steps} steps, {run.tokens} tokens, {run.train_flops:.3g} FLOPs"
                          f"{' (finished)' if done else ''} -> {os.path.relpath(run.directory, repo)}")
            if args.dry_run:
                continue
            results = []
            for run in study["runs"]:
                done = os.path.join(run.directory, "result.json")
                if os.path.exists(done):
                    log(logs, f"skip {run.name}: finished ({os.path.relpath(done, repo)})")
                    results.append(read_json(done))
                else:
                    results.append(execute(run, run.directory, study["evaluations"], binaries, logs, repo,
                                           study["prune_checkpoints"], study["launcher"]))
            if shutil.which("gnuplot"):
                plots = make_plots(study, study["runs"], results, binaries["train"])
            else:  # e.g. a GPU node without it: the runs and tables still count; rerun where gnuplot is
                plots = []
                log(logs, f"study {study['name']}: gnuplot not found, plots skipped (rerun with gnuplot on PATH "
                          "to draw them from the finished runs)")
            write_tables(study, [table_row(run, result, repo) for run, result in zip(study["runs"], results)],
                         plots, command)
            log(logs, f"study {study['name']}: wrote {os.path.relpath(study['out'], repo)}/results.md, results.csv "
                      f"and {len(plots)} plots")
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
