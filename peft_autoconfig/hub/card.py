"""Model cards for pushed configs, rendered from the Jinja templates in `hub_cards/` with `ModelCard.from_template`.

Metadata goes through `ModelCardData` (library_name, base_model, tags, datasets, metrics and a model-index of
`EvalResult`s, one per front point), so the Hub indexes it and `ModelCard.load` parses it back.

Templates live in one place, inside the package (`peft_autoconfig/hub_cards/`, package data, so an installed wheel
has them), and are read with `importlib.resources`.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from peft import PeftConfig

from ..front import PLOT_FILE, Front, FrontPoint, describe_config
from ..front.stats import describe_fidelity_agreement
from .source import PushSource

TEMPLATE_NAME = "searched_config.md"
PIPELINE_TAGS = {
    "SEQ_CLS": "text-classification",
    "TOKEN_CLS": "token-classification",
    "CAUSAL_LM": "text-generation",
    "SEQ_2_SEQ_LM": "text2text-generation",
    "QUESTION_ANS": "question-answering",
    "FEATURE_EXTRACTION": "feature-extraction",
}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def template_path(name: str = TEMPLATE_NAME) -> Path:
    """Path of a card template shipped in the package's `hub_cards/` (package data)."""
    packaged = resources.files("peft_autoconfig") / "hub_cards" / name
    if not packaged.is_file():
        raise FileNotFoundError(f"model card template {name!r} not found in peft_autoconfig/hub_cards/; is the "
                                "package installed with its package data?")
    return Path(str(packaged))


def looks_like_repo_id(value: str | None) -> bool:
    """True for 'org/name' or a canonical 'name' that is not an existing local path (base_model must be a repo)."""
    return bool(value) and bool(_REPO_ID.match(value)) and not Path(value).exists() and ".." not in value


def _peft_method(config: PeftConfig) -> str:
    return str(getattr(config.peft_type, "value", config.peft_type)).lower()


def _format_seconds(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _eval_split(point: FrontPoint) -> str:
    """The split a point's headline metric was measured on: the report's when a final stage ran."""
    if point.report is not None:
        return point.report.split
    return point.selection.split if point.selection is not None else "validation"


def _metric_cell(point: FrontPoint) -> str:
    """'0.8030 ± 0.0110 (test, 3 seeds)': the headline value with its standard error (or sd) and where."""
    report, selection = point.report, point.selection
    spread = (report.standard_error if report.standard_error is not None else report.sd) if report else (
        selection.standard_error if selection else None)
    text = f"{point.metric:.4f}" + (f" ± {spread:.4f}" if spread is not None else "")
    if report is not None:
        text += f" ({report.split}{f', {len(report.seeds)} seeds' if len(report.seeds) > 1 else ''})"
    return text


def _search_settings(front: Front, search: dict) -> list[tuple[str, Any]]:
    """(label, value) rows for the card's settings table; missing values are left out."""
    cost = search.get("cost_full_runs")
    lora_cost = search.get("cost_lora_r8_runs")
    hypervolume = front.hypervolume
    objectives = ", ".join(f"{o.name} ({o.direction})" for o in front.objectives)
    rows = [
        ("algorithm", search.get("algorithm")),
        ("evaluations (trials)", search.get("n_trials")),
        ("seed", search.get("seed")),
        ("wall time", _format_seconds(search.get("wall_time_s"))),
        ("cost in full training runs", f"{cost:.2f}" if _is_number(cost) else None),
        ("cost in final-budget LoRA r=8 runs", f"{lora_cost:.2f}" if _is_number(lora_cost) else None),
        ("hypervolume", f"{hypervolume:.6g}" if _is_number(hypervolume) else None),
        ("low fidelity vs the next level (the search's promoted points)",
         describe_fidelity_agreement(search.get("fidelity_agreement") or [])),
        ("reference point", front.reference_point),
        ("objectives", objectives),
    ]
    return [(label, value) for label, value in rows if value not in (None, "")]


def build_model_card(
    source: PushSource,
    repo_id: str,
    base_model: str | None = None,
    dataset: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """Render the card of `source` as it will appear in `repo_id`.

    `base_model` / `dataset` override what front.json says; a local path is never written as `base_model`
    (the Hub expects a repo id), it is only named in the card body.
    """
    from .validation import select_point

    front = source.front
    configs = source.configs
    first = next(iter(configs.values()))
    model = base_model or (front.model if front else first.base_model_name_or_path)
    task = dataset or (front.task if front else None)
    metric = front.metric if front else None
    pipeline_tag = PIPELINE_TAGS.get(str(getattr(first.task_type, "value", first.task_type)))
    methods = sorted({_peft_method(c) for c in configs.values()})

    if source.kind == "front":
        points = front.points
        default = select_point(front, None, None, repo_id).name
    else:
        points = [source.point] if source.point else []
        default = source.point.name if source.point else None

    rows = []
    for point in points:
        config = configs.get(point.name) if source.kind == "front" else first
        rows.append({
            "name": point.name,
            "metric": _metric_cell(point),
            "trainable_parameters": f"{point.trainable_parameters:,}",
            "method": _peft_method(config),
            "description": describe_config(config),
            "subfolder": point.config_path if source.kind == "front" else None,
            "fidelity": ", ".join(f"{k}={v}" for k, v in point.fidelity.items() if v is not None),
            "default": point.name == default,
        })

    eval_results = [
        EvalResult(
            task_type=pipeline_tag or "text-classification",
            dataset_type=task,
            dataset_name=task,
            dataset_split=_eval_split(point),
            metric_type=metric,
            metric_name=f"{metric} ({point.name}, {point.trainable_parameters:,} trainable parameters)",
            metric_value=float(point.metric),
        )
        for point in points
    ] if (front and task and metric) else None

    card_data = ModelCardData(
        library_name="peft",
        base_model=model if looks_like_repo_id(model) else None,
        datasets=[task] if looks_like_repo_id(task) else None,
        metrics=[metric] if metric else None,
        tags=["peft", *methods, "peft_autoconfig", "autopeft"],
        pipeline_tag=pipeline_tag,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
        license=license,
    )

    search = dict(front.search) if front else {}
    settings = _search_settings(front, search) if front else []
    baselines = [
        {"name": b.name, "metric": _metric_cell(b), "trainable_parameters": f"{b.trainable_parameters:,}"}
        for b in front.baselines if b.metric is not None
    ] if front else []
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        repo_id=repo_id,
        kind=source.kind,
        base_model_display=model or "unknown",
        base_model_is_repo=looks_like_repo_id(model),
        task=task or "unknown",
        metric=metric,
        direction=front.direction if front else None,
        points=rows,
        default_point=default,
        has_plot=PLOT_FILE in source.files,
        plot_file=PLOT_FILE,
        search_settings=settings,
        recipe=json.dumps(search["recipe"], indent=2, sort_keys=True) if search.get("recipe") else None,
        baselines=baselines,
        methods=methods,
        auto_class="AutoModelForCausalLM" if pipeline_tag == "text-generation" else "AutoModelForSequenceClassification",
        auto_kwargs="" if pipeline_tag == "text-generation" else ", num_labels=2",
        has_weights=any(p.endswith(".safetensors") for p in source.files),
    )
