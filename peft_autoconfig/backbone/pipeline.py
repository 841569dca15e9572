"""`prune_model(recipe, out)`: both stages and the export, resumable, in one output folder.

    out/supernet/          stage 1: the sandwich-trained super-network (full model, or LoRA adapter + merge)
    out/supernet/DONE.json marks a finished stage 1 (with the recipe's super-network fingerprint)
    out/supernet/rewiring.json  with `supernet.rewire`: the unit and head order stage 1 sorted the model into
    out/journal.jsonl      stage 2: one line per scored sub-network (the PET search's journal format)
    out/front.json         the Pareto front, beside the unpruned super-network
    out/front/<name>/      each front sub-network as a plain, smaller model (safetensors + tokenizer)
    out/retrained/<id>/    optional: each front model after a short full fine-tuning (`retrain:`), cached
    out/pareto.png         metric against exported parameters: scored sub-networks, the front, the unpruned model

Everything that can be checked before training (the model family, the space against the model's sizes, the
recipe) is checked first. Under a launcher (torchrun, deepspeed) every process trains stage 1; rank 0 alone then
searches and exports, the others return an empty result.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..front.files import FRONT_FILE
from ..search.journal import Journal, JournalMismatchError
from ..search.pareto import hypervolume, non_dominated
from ..search.recipe import RecipeError
from .export import save_exported
from .recipe import PruneRecipe
from .rewiring import RewireAfterWarmup, apply_rewiring
from .sandwich import BackboneSupernet, SandwichTrainer
from .search import (OBJECTIVE_KEYS, SubNetworkScorer, check_latency_device, score_record, search_subnetworks,
                     subnetwork_key)
from .space import BackboneSpace, SubNetwork, family_for

FRONT_FORMAT_VERSION = 1


@dataclass
class PruneResult:
    document: dict[str, Any]
    n_trials: int
    n_scored: int


def is_main_process() -> bool:
    """Rank 0 of a distributed stage 1 (torchrun, deepspeed launcher), or a single process: it alone searches."""
    return int(os.environ.get("RANK", "0")) == 0


def sliced_heads_for(config: Any) -> bool:
    """Whether the export of a model of `config` slices heads (see `export.head_plan`)."""
    return family_for(config).head_dim_in_config


def check_recipe(recipe: PruneRecipe) -> BackboneSpace:
    """The space over the recipe's model (read from its config only): errors naming the field, before training."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(recipe.model)
    except OSError as error:
        raise FileNotFoundError(f"recipe field `model`: cannot read a model config from {recipe.model!r}: {error}") from None
    space = recipe.build_space(config)
    if not sliced_heads_for(config) and space.granularity != "layer" and space.min_heads < space.dims.num_heads:
        warnings.warn(
            f"space: heads removed from a {config.model_type} model are zeroed in the exported model, not removed "
            f"(a {config.model_type} config ties the head size to hidden_size / num_attention_heads), so they save "
            "no exported parameters or latency (only `effective_parameters`); set `space.min_heads: "
            f"{space.dims.num_heads}` to search layers and FFN units only. See docs/backbone.md.", stacklevel=2)
    try:
        check_latency_device(recipe.latency.device)
    except ValueError as error:
        raise RecipeError(str(error)) from None
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None:
        positions -= 2 if config.model_type == "roberta" else 0  # RoBERTa's positions start after the padding id
        if recipe.latency.sequence_length > positions:
            raise RecipeError(f"recipe field `latency.sequence_length` ({recipe.latency.sequence_length}) is longer "
                              f"than the model's {positions} positions.")
    return space


def train_supernetwork(recipe: PruneRecipe, directory: Path, progress: bool) -> None:
    """Stage 1 through the runner (`Trainer`, optionally DeepSpeed), unless `directory` holds a finished one."""
    from ..training.runner import RunConfig, run

    done = directory / "DONE.json"
    fingerprint = recipe.fingerprint("supernet")
    if done.is_file():
        found = json.loads(done.read_text()).get("fingerprint")
        if found != fingerprint:
            raise JournalMismatchError(f"{directory} holds a super-network of another recipe (fingerprint {found}, "
                                       f"this recipe {fingerprint}); use another `--out` folder.")
        return
    spec = recipe.supernet
    peft_config = None
    if spec.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS", r=spec.lora.r, lora_alpha=spec.lora.alpha,
                                 target_modules=list(spec.lora.target_modules))
    if directory.exists():
        shutil.rmtree(directory)  # an unfinished stage 1 starts over
    result = run(RunConfig(
        model_name_or_path=recipe.model, task=recipe.task, peft_config=peft_config, output_dir=str(directory),
        seed=recipe.seed, train_subset=spec.train_subset, num_epochs=spec.num_epochs, max_steps=spec.max_steps or -1,
        learning_rate=spec.learning_rate, batch_size=spec.batch_size, max_length=spec.max_length,
        eval_split=recipe.search.eval_split, eval_subset=recipe.search.eval_subset, deepspeed=spec.deepspeed,
        show_progress=progress, trainer_class=SandwichTrainer,
        trainer_kwargs={"supernet": BackboneSupernet(**recipe.space.model_dump()), "num_random": spec.num_random,
                        "temperature": spec.temperature, **rewire_kwargs(recipe, directory)},
    ))
    if is_main_process():
        done.write_text(json.dumps({"fingerprint": fingerprint, "wall_time_s": result.wall_time_s,
                                    "metric": result.metric_value, "metric_name": result.metric_name}) + "\n")


def rewire_kwargs(recipe: PruneRecipe, directory: Path) -> dict[str, Any]:
    """The sandwich trainer's arguments for the recipe's `supernet.rewire` (none without it)."""
    spec = recipe.supernet.rewire
    if spec is None:
        return {}
    return {"largest_only_fraction": spec.after,
            "before_sandwich": RewireAfterWarmup(spec.importance, spec.batches, directory)}


def load_supernetwork(recipe: PruneRecipe, directory: Path, num_labels: int, tokenizer: Any, label_names: Any) -> Any:
    """The trained super-network as a plain model (a LoRA super-network is merged into the backbone, rewired first
    as it was during stage 1)."""
    from transformers import AutoModelForSequenceClassification

    if (directory / "adapter_config.json").is_file():
        from peft import PeftModel

        from ..training.runner import load_model

        base = apply_rewiring(load_model(recipe.model, num_labels, tokenizer, label_names), directory)
        return PeftModel.from_pretrained(base, directory).merge_and_unload().eval()
    return AutoModelForSequenceClassification.from_pretrained(directory).eval()


def evaluation_batches(recipe: PruneRecipe, task: Any, tokenizer: Any,
                       split: str | None = None) -> list[dict[str, torch.Tensor]]:
    """The collated, labelled batches of the search's split (`search.eval_split`, `search.eval_subset`), or of all
    of `split` (e.g. the benchmark's report split)."""
    from ..training.data import length_sorted_batches, seeded_subset, tokenized_splits
    from ..training.runner import EVAL_SUBSET_SEED

    splits = tokenized_splits(task, tokenizer, recipe.supernet.max_length)
    field, subset = ("search.eval_split", recipe.search.eval_subset) if split is None else ("split", None)
    split = split or recipe.search.eval_split
    if split not in splits or "labels" not in splits[split].column_names:
        raise ValueError(f"recipe field `{field}`: {split!r} is not a labelled split of the task; "
                         f"splits: {sorted(splits)}.")
    dataset = seeded_subset(splits[split], subset, EVAL_SUBSET_SEED)
    return length_sorted_batches(dataset, tokenizer, recipe.supernet.batch_size * 2)


def prune_model(recipe: PruneRecipe, out: str | Path, progress: bool = True) -> PruneResult:
    """Run or resume both stages and export the front; see the module docstring."""
    from ..training.data import load_tokenizer
    from ..training.metrics import build_compute_metrics
    from ..training.tasks import load_splits, load_task, resolve_num_labels

    start = time.perf_counter()
    space = check_recipe(recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main = is_main_process()
    if main:  # a journal of another recipe is refused before training
        journal = Journal(out / "journal.jsonl", recipe.fingerprint("search"), recipe.model_dump(mode="json"))
    task = load_task(recipe.task)
    train_supernetwork(recipe, out / "supernet", progress)
    if not main:
        return PruneResult({}, 0, 0)
    tokenizer = load_tokenizer(recipe.model)
    num_labels = resolve_num_labels(task, load_splits(task))
    model = load_supernetwork(recipe, out / "supernet", num_labels, tokenizer, task.label_names)
    scorer = SubNetworkScorer(model, evaluation_batches(recipe, task, tokenizer),
                              build_compute_metrics(task.metric_names, num_labels), task.metric_names[0],
                              recipe.latency.model_dump())
    objectives, split = recipe.search.objectives, recipe.search.eval_split
    full = SubNetwork.full(space.dims)
    unpruned = next((r for r in journal if r.kind == "baseline" and r.name == "unpruned"), None)
    n_before = len(journal)
    if unpruned is None:
        unpruned = journal.add(score_record(len(journal), "baseline", "unpruned", None, full, scorer, objectives, split,
                                            recipe.seed))
    if not unpruned.ok:
        raise RuntimeError(f"scoring the unpruned super-network failed: {unpruned.error}")
    asked, _ = search_subnetworks(space, scorer, journal, algorithm=recipe.search.algorithm,
                                  n_trials=recipe.search.n_trials, pop_size=recipe.search.pop_size, seed=recipe.seed,
                                  objectives=objectives, eval_split=split, progress=progress)
    front = front_records(asked, objectives)
    baselines = score_baselines(recipe, model, scorer, journal, front, progress)
    document = write_front(recipe, out, model, tokenizer, asked, front, unpruned, baselines,
                           time.perf_counter() - start, progress)
    return PruneResult(document, len(asked), len(journal) - n_before)


def front_records(asked: list, objectives: list[str]) -> list:
    """The non-dominated records among the asked sub-networks (unique, successful), by size."""
    unique = {r.key: r for r in asked if r.ok}
    records = sorted(unique.values(), key=lambda r: (r.trainable_parameters, r.trial_id))
    F = np.array([r.F for r in records], dtype=float).reshape(-1, len(objectives))
    return [records[i] for i in non_dominated(F)]


def score_baselines(recipe: PruneRecipe, model: Any, scorer: SubNetworkScorer, journal: Journal, front: list,
                    progress: bool) -> list[dict[str, Any]]:
    """Each rule of `recipe.baselines` at the exported size of each front point, scored like the search's points
    (shared weights, exported size, measured latency) and journaled (`kind="baseline"`), so a resumed run reuses
    them. Returns the `front.json` entries."""
    from tqdm.auto import tqdm

    from .baselines import baseline_subnetwork, magnitude_importance, taylor_importance

    spec = recipe.baselines
    if spec is None or not spec.rules or not front:
        return []
    importance = None
    if "importance" in spec.rules:
        importance = (taylor_importance(model, scorer.batches) if spec.importance == "taylor"
                      else magnitude_importance(model))
    entries = []
    jobs = [(rule, i, record) for i, record in enumerate(front) for rule in spec.rules]
    for rule, i, record in tqdm(jobs, desc="baselines", unit="net", disable=not progress):
        sub = baseline_subnetwork(rule, model, record.trainable_parameters, importance)
        result = journal.get(subnetwork_key(sub))
        if result is None:
            result = journal.add(score_record(len(journal), "baseline", rule, None, sub, scorer,
                                              recipe.search.objectives, recipe.search.eval_split, recipe.seed))
        if not result.ok:
            continue
        entries.append({
            "name": f"{rule}@p{i:02d}", "rule": rule, "target": f"p{i:02d}",
            "target_parameters": record.trainable_parameters, "metric": result.metric,
            "parameters": result.trainable_parameters, "objectives": result.objectives,
            "subnetwork": sub.to_dict(), "description": sub.describe(),
            **({"importance": spec.importance} if rule == "importance" else {}),
        })
    return entries


def write_front(recipe: PruneRecipe, out: Path, model: Any, tokenizer: Any, asked: list, front: list, unpruned: Any,
                baselines: list[dict[str, Any]], wall_time_s: float, progress: bool) -> dict[str, Any]:
    """Export the `front` records to `out/front/<name>/` (re-trained if the recipe says so) and write
    `out/FRONT_FILE` (with the `baselines` entries of `score_baselines`)."""
    objectives = recipe.search.objectives
    unique = {r.key: r for r in asked if r.ok}
    reference = [0.0 if o == "metric" else 1.1 * unpruned.objectives[OBJECTIVE_KEYS[o]] for o in objectives]
    shutil.rmtree(out / "front", ignore_errors=True)  # derived from the journal: rebuilt on every run
    points = []
    for i, record in enumerate(front):
        name = f"p{i:02d}"
        sub = SubNetwork.from_dict(record.config)
        save_exported(model, sub, out / "front" / name, tokenizer)
        points.append({"name": name, "trial_id": record.trial_id, "metric": record.metric,
                       "parameters": record.trainable_parameters, "objectives": record.objectives,
                       "subnetwork": record.config, "description": sub.describe(), "path": f"front/{name}"})
    if recipe.retrain is not None:
        from .retrain import retrain_front

        retrain_front(recipe, out, points, progress)
    document = {
        "format_version": FRONT_FORMAT_VERSION, "kind": "prune-model", "model": recipe.model, "task": recipe.task,
        "metric": front[0].metric_name if front else unpruned.metric_name,
        "objectives": list(objectives), "granularity": recipe.space.granularity,
        "latency": {**recipe.latency.model_dump(), "torch_threads": torch.get_num_threads(),
                    "device": str(next(model.parameters()).device)},
        "reference_point": reference,
        "hypervolume": hypervolume(np.array([r.F for r in front]).reshape(-1, len(objectives)), reference),
        "unpruned": {"metric": unpruned.metric, "parameters": unpruned.trainable_parameters,
                     "objectives": unpruned.objectives},
        "search": {"algorithm": recipe.search.algorithm, "eval_split": recipe.search.eval_split,
                   "n_trials": len(asked), "n_unique": len(unique),
                   "n_failed": sum(1 for r in asked if not r.ok), "wall_time_s": wall_time_s},
        "points": points,
        "baselines": baselines,
    }
    from ..search.plot import plot_front

    plot_front(out / "pareto.png", [r.to_dict() for r in unique.values()],
               [{"name": p["name"], "trainable_parameters": p["parameters"], "metric": p["metric"]} for p in points],
               [{"name": "unpruned", "trainable_parameters": unpruned.trainable_parameters, "metric": unpruned.metric}]
               + plot_baselines(baselines),
               metric_name=document["metric"], title=f"prune-model: {recipe.model} ({recipe.space.granularity})",
               xlabel="parameters of the exported model")
    tmp = out / f"{FRONT_FILE}.tmp"
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(out / FRONT_FILE)
    return document


def plot_baselines(baselines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One marker per distinct baseline network, with a short label ("top 2L", "imp 6L w=40")."""
    seen, marks = set(), []
    for entry in baselines:
        key = json.dumps(entry["subnetwork"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        sub = entry["subnetwork"]
        label = (f"top {len(sub['layers'])}L" if entry["rule"] == "drop_top_layers"
                 else f"imp w={len(sub['units'][0])}")
        marks.append({"name": label, "trainable_parameters": entry["parameters"], "metric": entry["metric"]})
    return marks
