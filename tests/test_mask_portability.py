"""Unstructured weight masks travel with their front point: `Front.save` copies the mask file into the point's folder
and names it relatively, loading a folder resolves it there (after a move, from the Hub), and a push uploads it with
no local path left in any file."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from huggingface_hub import constants
from peft import get_peft_model
from test_hub import REPO, TOKEN, tiny_png

from peft_autoconfig import MixedPetConfig
from peft_autoconfig.front import MASK_FILE, Front, FrontPoint, Objective, Selection, config_to_dict, load_point_config
from peft_autoconfig.hub import AutoSearchedConfig, push_to_hub
from peft_autoconfig.tuners.weight_masks import current_masks, load_mask_file, pet_parameters, save_mask_file


def masked_config(tmp_path: Path) -> tuple[MixedPetConfig, dict[str, torch.Tensor]]:
    """A LoRA + BitFit config whose random masks live where the prune strategy writes them (an absolute path)."""
    base = dict(task_type="SEQ_CLS", lora_rank=2, target_modules=["query", "value"], bias_tuning=1)
    model = get_peft_model(tiny_model("bert"), MixedPetConfig(**base))
    generator = torch.Generator().manual_seed(3)
    masks = {key: torch.rand(p.shape, generator=generator) > 0.5 for key, (_, _, p) in pet_parameters(model, "default").items()}
    path = save_mask_file(tmp_path / "oneshot" / "masks" / "run-0" / "budget-100.safetensors", masks)
    return MixedPetConfig(**base, weight_masks=str(path.resolve())), masks


def save_front(out: Path, config: MixedPetConfig) -> Front:
    point = FrontPoint(name="p00", trainable_parameters=100, config=config_to_dict(config),
                       objectives={"accuracy": 0.7, "trainable_parameters": 100},
                       selection=Selection("validation", "accuracy", 0.7, None, 64))
    front = Front(model="hf-internal-testing/tiny-random-BertModel", task="rotten_tomatoes", metric="accuracy",
                  objectives=[Objective("accuracy", "max"), Objective("trainable_parameters", "min")], points=[point])
    front.save(out)
    (out / "pareto.png").write_bytes(tiny_png())
    return front


def assert_same_masks(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)


def test_front_export_carries_the_mask_file_and_the_moved_folder_reloads_the_same_masks(tmp_path):
    from peft_autoconfig.commands.train import load_peft_config

    config, masks = masked_config(tmp_path / "run")
    out = tmp_path / "run" / "out"
    save_front(out, config)
    folder = out / "front" / "p00"
    assert (folder / MASK_FILE).is_file()
    written = json.loads((folder / "adapter_config.json").read_text())
    inline = json.loads((out / "front.json").read_text())["points"][0]["config"]
    assert written["weight_masks"] == inline["weight_masks"] == MASK_FILE
    assert str(tmp_path).encode() not in (folder / "adapter_config.json").read_bytes()

    moved = tmp_path / "elsewhere" / "out"
    shutil.move(str(out), str(moved))
    shutil.rmtree(tmp_path / "run")  # the original mask file is gone: only the folder's copy can serve
    for loaded in (load_point_config(moved / "front" / "p00"),
                   load_point_config(Front.load(moved).point("p00"), root=moved),
                   AutoSearchedConfig.from_pretrained(moved),
                   load_peft_config(str(moved / "front" / "p00"))):  # `peft-autoconfig train --config`
        assert Path(loaded.weight_masks) == (moved / "front" / "p00" / MASK_FILE).absolute()
        assert_same_masks(load_mask_file(loaded.weight_masks), masks)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*weight_masks.*")  # no "`weight_masks` file ... not found"
        model = get_peft_model(tiny_model("bert"), load_point_config(moved / "front" / "p00"))
    assert_same_masks(current_masks(model), masks)

    Front.load(moved).save(moved)  # saved again in place: the folder keeps its own mask file
    assert_same_masks(load_mask_file(moved / "front" / "p00" / MASK_FILE), masks)


def test_a_relative_mask_name_that_does_not_resolve_keeps_the_warning(tmp_path):
    folder = tmp_path / "point"
    MixedPetConfig(task_type="SEQ_CLS", lora_rank=2, target_modules=["query"], weight_masks="absent.safetensors"
                   ).save_pretrained(str(folder))
    config = load_point_config(folder)
    assert config.weight_masks == "absent.safetensors"  # kept as written
    with pytest.warns(UserWarning, match="`weight_masks` file 'absent.safetensors' not found"):
        get_peft_model(tiny_model("bert"), config)


def test_a_point_without_masks_loses_a_stale_mask_file(tmp_path):
    config, _ = masked_config(tmp_path)
    out = tmp_path / "out"
    front = save_front(out, config)
    front.points[0].config = config_to_dict(MixedPetConfig(task_type="SEQ_CLS", lora_rank=2, target_modules=["query"]))
    front.save(out)
    assert not (out / "front" / "p00" / MASK_FILE).exists()


def published_leaks(files: dict[str, bytes], root: Path) -> set[str]:
    return {path for path, content in files.items() if str(root).encode() in content or b"/tmp/" in content
            or b'"weight_masks": "/' in content}


def test_push_dry_run_uploads_the_mask_file_and_no_absolute_path(tmp_path):
    config, masks = masked_config(tmp_path)
    out = tmp_path / "out"
    save_front(out, config)
    dry = Path(push_to_hub(out, REPO, dry_run=tmp_path / "dry").dry_run_dir)
    files = {p.relative_to(dry).as_posix(): p.read_bytes() for p in dry.rglob("*") if p.is_file()}
    assert f"front/p00/{MASK_FILE}" in files
    assert_same_masks(load_mask_file(dry / "front" / "p00" / MASK_FILE), masks)
    assert json.loads(files["front/p00/adapter_config.json"])["weight_masks"] == MASK_FILE
    assert published_leaks(files, tmp_path) == set()


def test_push_of_an_output_naming_its_masks_by_absolute_path_carries_the_file(tmp_path):
    """An output written before masks travelled with their point (its config names the oneshot/ file)."""
    config, masks = masked_config(tmp_path)
    out = tmp_path / "out"
    save_front(out, config)
    for path in (out / "front" / "p00" / MASK_FILE,):
        path.unlink()
    config.save_pretrained(str(out / "front" / "p00"))  # the absolute path again
    document = json.loads((out / "front.json").read_text())
    document["points"][0]["config"]["weight_masks"] = config.weight_masks
    (out / "front.json").write_text(json.dumps(document))
    assert str(tmp_path).encode() in (out / "front" / "p00" / "adapter_config.json").read_bytes()

    dry = Path(push_to_hub(out, REPO, dry_run=tmp_path / "dry").dry_run_dir)
    files = {p.relative_to(dry).as_posix(): p.read_bytes() for p in dry.rglob("*") if p.is_file()}
    assert_same_masks(load_mask_file(dry / "front" / "p00" / MASK_FILE), masks)
    assert json.loads(files["front/p00/adapter_config.json"])["weight_masks"] == MASK_FILE
    assert json.loads(files["front.json"])["points"][0]["config"]["weight_masks"] == MASK_FILE
    assert published_leaks(files, tmp_path) == set()
    assert_same_masks(load_mask_file(load_point_config(dry / "front" / "p00").weight_masks), masks)


@pytest.fixture
def hub(monkeypatch):
    from hub_server import LocalHub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets HF_HUB_OFFLINE=1 for everything else
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the local Hub speaks Git LFS, not Xet
    with LocalHub(token=TOKEN, max_seconds=120) as server:
        yield server


def test_a_pushed_masked_point_pulls_with_its_masks(tmp_path, hub):
    config, masks = masked_config(tmp_path)
    out = tmp_path / "out"
    save_front(out, config)
    push_to_hub(out, REPO, token=TOKEN, endpoint=hub.endpoint)
    uploaded = hub.repos[REPO].head("main").files
    assert f"front/p00/{MASK_FILE}" in uploaded and published_leaks(uploaded, tmp_path) == set()
    shutil.rmtree(out)
    pulled = AutoSearchedConfig.from_pretrained(REPO, endpoint=hub.endpoint, cache_dir=tmp_path / "cache")
    assert Path(pulled.weight_masks).name == MASK_FILE and str(tmp_path / "cache") in pulled.weight_masks
    assert_same_masks(load_mask_file(pulled.weight_masks), masks)
