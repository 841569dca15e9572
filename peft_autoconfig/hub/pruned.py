"""Push one pruned model of a `prune-model` output to the Hub: the plain model files at the repo root (so
`AutoModelFor*.from_pretrained(repo_id)` loads it), the Pareto plot, the front as `pruning_front.json` and a model
card (size, measured latency, metric, the fixed-rule baselines at that size, how to load it), in one commit.

The source is a `prune-model --out` folder (a point is chosen by name, default the best metric) or one exported
point folder inside it (`<out>/front/p03`, or `<out>/retrained/<id>` with `retrained=True` on its folder). As for
PEFT fronts (`push.py`), everything is read and checked locally first, absolute paths are stripped from the JSON
files, and only safetensors weights travel.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..front import FRONT_FILE, PLOT_FILE
from .card import looks_like_repo_id, template_path
from .errors import HubConfigError
from .push import (
    CARD_FILE, PushResult, _check_no_local_path, _json_bytes, commit_upload, strip_local_paths, write_dry_run,
)
from .source import PICKLE_SUFFIXES, PRUNE_KIND

PRUNED_TEMPLATE = "pruned_model.md"
PRUNED_FRONT_FILE = "pruning_front.json"
"""The front as published: not `front.json`, which the Hub code reads as a front of PEFT configs."""
LOCAL_TOKENIZER_KEYS = ("is_local", "local_files_only")
MODEL_FILES = frozenset({
    "config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
    "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
})
"""What travels from a model folder besides `*.safetensors` (a re-trained folder also holds the runner's logs)."""
"""Loading options that transformers records in tokenizer_config.json and that must not travel to the Hub."""


@dataclass
class PrunedSource:
    """A checked pruned model: its front document, the chosen point and the model folder."""

    root: Path
    document: dict[str, Any]
    point: dict[str, Any]
    model_dir: Path
    retrained: bool


def is_prune_output(directory: str | os.PathLike) -> bool:
    """True for a `prune-model` output folder or a point folder inside one (so `push` can dispatch on it)."""
    return _find_front(Path(directory)) is not None


def _read_document(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) and document.get("kind") == PRUNE_KIND else None


def _find_front(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """(the prune-model output root, its front document) for the root itself or a folder up to two levels below."""
    resolved = directory.resolve()
    for root in [resolved, *list(resolved.parents)[:2]]:
        document = _read_document(root / FRONT_FILE)
        if document is not None:
            return root, document
    return None


def read_pruned_source(directory: str | os.PathLike, point: str | None = None, retrained: bool = False) -> PrunedSource:
    """Check `directory` and pick the point; errors name the field (`point`, `points[i].path`, ...)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"`dir` must be a prune-model output folder or a point folder; {directory} is not "
                                "a folder.")
    found = _find_front(directory)
    if found is None:
        raise HubConfigError(f"{directory}: no {FRONT_FILE} of kind {PRUNE_KIND!r} here or above; run "
                             "`peft-autoconfig prune-model RECIPE --out DIR` first.")
    root, document = found
    points = document.get("points")
    if not isinstance(points, list) or not points:
        raise HubConfigError(f"{root / FRONT_FILE}: field `points` must be a non-empty list.")
    for index, entry in enumerate(points):
        for field in ("name", "metric", "parameters", "path", "subnetwork"):
            if not isinstance(entry, dict) or field not in entry:
                raise HubConfigError(f"{root / FRONT_FILE} points[{index}]: field `{field}` is missing.")
    by_name = {entry["name"]: entry for entry in points}
    if directory.resolve() != root:  # a point folder: the point is the one whose folder it is
        here = directory.resolve()

        def retrained_here(entry: dict[str, Any]) -> bool:
            return "retrained" in entry and (root / entry["retrained"]["path"]).resolve() == here

        matches = [e for e in points if (root / e["path"]).resolve() == here or retrained_here(e)]
        if not matches:
            raise HubConfigError(f"{directory}: not the folder of any point of {root / FRONT_FILE}.")
        if point is not None and point != matches[0]["name"]:
            raise HubConfigError(f"`point` {point!r} does not match the folder {directory} (point "
                                 f"{matches[0]['name']!r}).")
        chosen = matches[0]
        retrained = retrained or retrained_here(chosen)
    elif point is not None:
        if point not in by_name:
            raise HubConfigError(f"`point` {point!r} is not in {root / FRONT_FILE}; allowed: {sorted(by_name)}.")
        chosen = by_name[point]
    else:  # the best metric, ties to the smaller model
        chosen = min(points, key=lambda e: (-e["metric"], e["parameters"], e["name"]))
    if retrained and "retrained" not in chosen:
        raise HubConfigError(f"`retrained`: point {chosen['name']!r} was not re-trained (recipe field `retrain:`).")
    model_dir = root / (chosen["retrained"]["path"] if retrained else chosen["path"])
    if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
        raise HubConfigError(f"{model_dir}: the point's model folder needs config.json and *.safetensors "
                             "(re-run prune-model to export it).")
    return PrunedSource(root=root, document=document, point=chosen, model_dir=model_dir, retrained=retrained)


def _model_files(source: PrunedSource) -> dict[str, bytes]:
    """The model folder's files for the repo root: configs with local paths stripped, safetensors, tokenizer."""
    files = {}
    for path in sorted(source.model_dir.iterdir()):
        if not path.is_file() or not (path.suffix == ".safetensors" or path.name in MODEL_FILES):
            if path.is_file() and path.suffix in PICKLE_SUFFIXES:
                warnings.warn(f"{path}: pickled weights are not uploaded (only safetensors).")
            continue
        content = path.read_bytes()
        if path.suffix == ".json":
            data = json.loads(content)
            cleaned = strip_local_paths(data)
            if path.name == "tokenizer_config.json" and isinstance(cleaned, dict):
                cleaned = {k: v for k, v in cleaned.items() if k not in LOCAL_TOKENIZER_KEYS}
            if cleaned != data:
                content = _json_bytes(cleaned)
        files[path.name] = content
    return files


def _milliseconds(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1000 * seconds:.2f} ms"


def build_pruned_card(source: PrunedSource, repo_id: str, base_model: str | None = None, dataset: str | None = None,
                      license: str | None = None) -> ModelCard:
    """The model card: what was pruned, size and latency against the unpruned model, the metric, how to load."""
    document, point = source.document, source.point
    unpruned = document.get("unpruned") or {}
    model = base_model or document.get("model")
    task = dataset or document.get("task")
    task = strip_local_paths(task) if isinstance(task, str) else None  # a local task folder: its name only
    metric = document.get("metric", "metric")
    config = json.loads((source.model_dir / "config.json").read_text())
    architecture = (config.get("architectures") or ["AutoModel"])[0]
    causal = architecture.endswith("ForCausalLM")
    auto_class = "AutoModelForCausalLM" if causal else "AutoModelForSequenceClassification"
    pipeline_tag = "text-generation" if causal else "text-classification"
    value = point["retrained"]["metric"] if source.retrained else point["metric"]
    split = (document.get("search") or {}).get("eval_split") or "validation"
    latency = document.get("latency") or {}
    point_latency = (point.get("objectives") or {}).get("latency_s")
    unpruned_latency = (unpruned.get("objectives") or {}).get("latency_s")
    rows = [
        ("parameters", f"{point['parameters']:,}",
         f"{unpruned['parameters']:,}" if unpruned.get("parameters") else "n/a"),
        (f"latency (batch {latency.get('batch_size')} x {latency.get('sequence_length')} tokens)",
         _milliseconds(point_latency), _milliseconds(unpruned_latency)),
        (f"{metric} ({split}, shared weights)", f"{point['metric']:.4f}",
         f"{unpruned['metric']:.4f}" if unpruned.get("metric") is not None else "n/a"),
    ]
    if "retrained" in point:
        rows.append((f"{metric} ({split}) after re-training", f"{point['retrained']['metric']:.4f}", "n/a"))
    ratio = point["parameters"] / unpruned["parameters"] if unpruned.get("parameters") else None
    speedup = unpruned_latency / point_latency if unpruned_latency and point_latency else None
    baselines = [
        {"name": b["rule"], "metric": f"{b['metric']:.4f}", "parameters": f"{b['parameters']:,}",
         "latency": _milliseconds((b.get("objectives") or {}).get("latency_s")),
         "description": b["description"] + (" (larger: the rule cannot go smaller)"
                                            if b["parameters"] > b["target_parameters"] else "")}
        for b in document.get("baselines", []) if b.get("target") == point["name"]
    ]
    card_data = ModelCardData(
        library_name="transformers",
        base_model=model if looks_like_repo_id(model) else None,
        datasets=[task] if looks_like_repo_id(task) else None,
        metrics=[metric],
        tags=["pruned", "structural-pruning", "peft_autoconfig", config.get("model_type", "")],
        pipeline_tag=pipeline_tag,
        model_name=repo_id.split("/")[-1],
        eval_results=[EvalResult(
            task_type=pipeline_tag, dataset_type=task or "unknown", dataset_name=task or "unknown",
            dataset_split=split, metric_type=metric, metric_name=f"{metric} ({point['parameters']:,} parameters)",
            metric_value=float(value),
        )],
        license=license,
    )
    subnetwork = point["subnetwork"]
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path(PRUNED_TEMPLATE)),
        repo_id=repo_id,
        base_model_display=strip_local_paths(model) or "unknown",
        base_model_is_repo=looks_like_repo_id(model),
        task=task or "unknown",
        metric=metric,
        point_name=point["name"],
        retrained=source.retrained,
        rows=rows,
        ratio=f"{100 * ratio:.1f}%" if ratio else None,
        speedup=f"{speedup:.2f}x" if speedup else None,
        latency_settings=(f"median of {latency.get('repeats')} forward passes, {latency.get('torch_threads')} torch "
                          f"threads on {latency.get('device')}, on the machine that ran the search"),
        n_layers=len(subnetwork["layers"]),
        layers=", ".join(map(str, subnetwork["layers"])),
        heads="/".join(str(len(h)) for h in subnetwork["heads"]),
        units="/".join(str(len(u)) for u in subnetwork["units"]),
        model_type=config.get("model_type"),
        num_attention_heads=config.get("num_attention_heads"),
        intermediate_size=config.get("intermediate_size"),
        granularity=document.get("granularity"),
        baselines=baselines,
        n_points=len(document["points"]),
        has_plot=(source.root / PLOT_FILE).is_file(),
        plot_file=PLOT_FILE,
        front_file=PRUNED_FRONT_FILE,
        auto_class=auto_class,
        has_tokenizer=any((source.model_dir / name).is_file() for name in ("tokenizer.json", "vocab.txt")),
    )


def collect_pruned_upload(directory: str | os.PathLike, repo_id: str, point: str | None = None,
                          retrained: bool = False, base_model: str | None = None, dataset: str | None = None,
                          license: str | None = None) -> dict[str, bytes]:
    """Path in repo -> content for a pruned-model push, README.md first."""
    source = read_pruned_source(directory, point, retrained)
    card = build_pruned_card(source, repo_id, base_model=base_model, dataset=dataset, license=license)
    upload = {CARD_FILE: str(card).encode("utf-8"), **_model_files(source)}
    if (source.root / PLOT_FILE).is_file():
        upload[PLOT_FILE] = (source.root / PLOT_FILE).read_bytes()
    upload[PRUNED_FRONT_FILE] = _json_bytes(strip_local_paths(source.document))
    _check_no_local_path(upload, source.root)
    return upload


def push_pruned_model(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    point: str | None = None,
    retrained: bool = False,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    dry_run: str | os.PathLike | None = None,
    commit_message: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    license: str | None = None,
    endpoint: str | None = None,
) -> PushResult:
    """Upload one pruned model of a prune-model output (see the module docstring) to `repo_id` in one commit.

    Args:
        directory: a `prune-model --out` folder, or one point folder inside it.
        point: the front point's name (`p03`); default the point with the best metric.
        retrained: push the point's re-trained model (`retrain:` in the recipe) instead of the exported one.
        Others: as `push_to_hub`.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"`repo_id` must look like 'org/name', got {repo_id!r}.")
    upload = collect_pruned_upload(directory, repo_id, point=point, retrained=retrained, base_model=base_model,
                                   dataset=dataset, license=license)
    if dry_run is not None:
        return PushResult(repo_id=repo_id, files=list(upload), dry_run_dir=str(write_dry_run(upload, dry_run)))
    message = commit_message or "Upload a pruned model (prune-model) with peft_autoconfig"
    return commit_upload(upload, repo_id, message, private=private, revision=revision, token=token, endpoint=endpoint)
