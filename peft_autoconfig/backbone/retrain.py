"""Optional short re-training of the exported front models (`retrain:` in the recipe), through the runner.

Each exported sub-network is fine-tuned as a plain model (full fine-tuning, no masks) and scored on the search's
evaluation split. Results are cached per sub-network and settings in `out/retrained/<id>/` (the model, its
tokenizer and `metrics.json`), so a resumed run does not train them again although `front/` is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .recipe import PruneRecipe


def retrain_front(recipe: PruneRecipe, out: Path, points: list[dict[str, Any]], progress: bool) -> None:
    """Add `retrained: {metric, path}` to each front point (training those not cached yet)."""
    from ..training.runner import RunConfig, run

    spec = recipe.retrain
    settings = json.dumps([recipe.fingerprint("search"), spec.model_dump(mode="json")], sort_keys=True)
    for point in points:
        identity = json.dumps(point["subnetwork"], sort_keys=True) + settings
        name = hashlib.sha256(identity.encode()).hexdigest()[:12]
        target = out / "retrained" / name
        metrics_file = target / "metrics.json"
        if not metrics_file.is_file():
            shutil.rmtree(target, ignore_errors=True)  # an unfinished re-training starts over
            run(RunConfig(
                model_name_or_path=str(out / point["path"]), task=recipe.task, output_dir=str(target),
                seed=recipe.seed, train_subset=spec.train_subset, num_epochs=spec.num_epochs,
                max_steps=spec.max_steps or -1, learning_rate=spec.learning_rate, batch_size=spec.batch_size,
                max_length=recipe.supernet.max_length, eval_split=recipe.search.eval_split,
                eval_subset=recipe.search.eval_subset, show_progress=progress,
            ))
        metrics = json.loads(metrics_file.read_text())
        point["retrained"] = {"metric": metrics["metric_value"], "path": str(Path("retrained") / name)}
