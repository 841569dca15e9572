"""front.json's one owner (`peft_autoconfig.front`): round trips, format 1 read by conversion, refusals that name
the version and the field, the point config loader, `describe_config`, standard errors and `show`."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
from peft import LoraConfig

from peft_autoconfig import MixedPetConfig, UniPELTConfig
from peft_autoconfig.front import (
    FORMAT_VERSION,
    Front,
    FrontError,
    FrontPoint,
    Objective,
    Report,
    Selection,
    binomial_standard_error,
    config_to_dict,
    describe_config,
    load_point_config,
)

PACKAGE = Path(__file__).parents[1] / "peft_autoconfig"
SMALL = MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size={0: 8, 3: 16}, layers_to_transform=[0, 3])
LORA = MixedPetConfig(task_type="SEQ_CLS", lora_rank=4, target_modules=["query", "value"])


def make_front() -> Front:
    selection = Selection(split="validation", metric="accuracy", value=0.75, standard_error=binomial_standard_error(0.75, 400), n=400)
    report = Report(split="test", metric="accuracy", mean=0.8, sd=0.01, standard_error=0.011, n=1280, seeds=[0.79, 0.8, 0.81])
    return Front(
        model="sentence-transformers/all-MiniLM-L6-v2", task="rotten_tomatoes", metric="accuracy",
        objectives=[Objective("accuracy", "max"), Objective("trainable_parameters", "min")],
        points=[
            FrontPoint(name="p00", trainable_parameters=100, config=config_to_dict(SMALL), trial_id=3,
                       objectives={"accuracy": 0.75, "trainable_parameters": 100}, fidelity={"max_steps": 80},
                       selection=selection),
            FrontPoint(name="p01", trainable_parameters=900, config=config_to_dict(LORA), trial_id=7,
                       selection=Selection("validation", "accuracy", 0.78, n=400), report=report,
                       metrics={"f1": 0.79}),
        ],
        baselines=[
            FrontPoint(name="lora_r8", kind="baseline", trainable_parameters=1200,
                       config=config_to_dict(LoraConfig(task_type="SEQ_CLS", r=8, target_modules=["query", "value"])),
                       selection=Selection("validation", "accuracy", 0.77)),
            FrontPoint(name="full_finetuning", kind="baseline", trainable_parameters=22_000_000, config=None,
                       report=Report("test", "accuracy", 0.829, seeds=[0.829])),
        ],
        reference_point=[0.0, 1e4], hypervolume=12.5, search={"algorithm": "nsga2", "n_trials": 16},
        model_path="/home/me/models/minilm",
    )


def v1_document() -> dict:
    """What wave 1's `write_front` wrote (format 1)."""
    return {
        "format_version": 1, "model": "org/bert", "model_path": "/abs/bert", "task": "synthetic", "metric": "accuracy",
        "objectives": [{"name": "accuracy", "direction": "max"}, {"name": "trainable_parameters", "direction": "min"}],
        "reference_point": [0.0, 1000.0], "hypervolume": 3.5,
        "search": {"algorithm": "nsga2", "recipe": {"training": {"eval_split": "test"}}},
        "points": [{"name": "p00", "trial_id": 4, "metric": 0.625, "trainable_parameters": 96,
                    "objectives": {"accuracy": 0.625, "trainable_parameters": 96},
                    "fidelity": {"train_subset": 128, "max_steps": 4}, "config_path": "front/p00", "x": {"a": 1}}],
        "baselines": [{"name": "lora_r4", "metric": 0.5, "trainable_parameters": 1024, "trial_id": 9}],
    }


def test_save_and_load_round_trip_with_one_config_folder_per_point(tmp_path):
    front = make_front()
    document = front.save(tmp_path)
    assert document["format_version"] == FORMAT_VERSION == 2
    assert json.loads((tmp_path / "front.json").read_text()) == document
    loaded = Front.load(tmp_path)
    assert loaded == front and loaded.points[0].config_path == "front/p00"
    assert sorted(p.name for p in (tmp_path / "front").iterdir()) == ["p00", "p01"]  # baselines get no folder
    for point, config in zip(loaded.points, (SMALL, LORA)):
        assert load_point_config(point, root=tmp_path).to_dict() == config.to_dict()  # from the folder
        assert load_point_config(point).to_dict() == config.to_dict()  # from the inline copy
    p01 = loaded.point("p01")
    assert p01.metric == 0.8 and p01.report.seeds == [0.79, 0.8, 0.81]  # the report is the headline once it exists
    assert loaded.points[0].metric == 0.75 and document["points"][0]["metric"] == 0.75
    assert loaded.point("full_finetuning").config is None


def test_save_removes_folders_of_points_that_left_the_front(tmp_path):
    make_front().save(tmp_path)
    smaller = make_front()
    smaller.points = smaller.points[:1]
    smaller.save(tmp_path)
    assert sorted(p.name for p in (tmp_path / "front").iterdir()) == ["p00"]


def test_format_1_is_read_by_converting_it(tmp_path):
    (tmp_path / "front.json").write_text(json.dumps(v1_document()))
    front = Front.load(tmp_path)
    point, baseline = front.points[0], front.baselines[0]
    assert (point.kind, point.metric, point.trial_id, point.config_path, point.x) == ("search", 0.625, 4, "front/p00", {"a": 1})
    assert point.selection == Selection(split="test", metric="accuracy", value=0.625)  # the recipe's eval split
    assert point.report is None and point.fidelity == {"train_subset": 128, "max_steps": 4}
    assert (baseline.kind, baseline.metric, baseline.config) == ("baseline", 0.5, None)
    assert front.model_path == "/abs/bert" and front.hypervolume == 3.5
    assert Front.from_dict(front.to_dict()) == front  # and it is written back as format 2


@pytest.mark.parametrize("version", [7, 0, None, "2"])
def test_other_versions_are_refused_naming_the_version_found_and_the_supported_ones(tmp_path, version):
    document = dict(v1_document(), format_version=version)
    with pytest.raises(FrontError, match=rf"front.json: field `format_version` = {version!r} is not supported; "
                                         rf"this peft_autoconfig reads 1 and 2 \(writes 2\)"):
        Front.from_dict(document, "front.json")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["points"][0].update(kind="other"), r"points\[0\]: field `kind` must be one of \['search', 'baseline'\], got 'other'"),
        (lambda d: d["points"][0].update(trainable_parameters=-1), r"points\[0\]: field `trainable_parameters` must be >= 0"),
        (lambda d: d["points"][0]["selection"].update(value="high"), r"points\[0\].selection: field `value` must be number, got 'high'"),
        (lambda d: d["points"][1]["report"].update(seeds=[0.1, "x"]), r"points\[1\].report: field `seeds` must be a list of numbers"),
        (lambda d: d["points"][0].update(config_path="/etc"), r"points\[0\]: field `config_path` must be a relative path"),
        (lambda d: d["baselines"][0].update(name="p00"), r"point name 'p00' is used twice"),
        (lambda d: d["objectives"][0].update(direction="up"), r"objectives\[0\]: field `direction` must be 'max' or 'min'"),
        (lambda d: d.pop("task"), r"field `task` must be str, got None"),
        (lambda d: d.update(reference_point="far"), r"field `reference_point` must be a list of numbers or null"),
    ],
)
def test_malformed_documents_name_the_point_and_the_field(tmp_path, change, message):
    document = make_front().to_dict()
    change(document)
    with pytest.raises(FrontError, match=message):
        Front.from_dict(document, "front.json")


def test_not_json_and_missing_files_are_clear(tmp_path):
    (tmp_path / "front.json").write_text("{'points': ")
    with pytest.raises(FrontError, match=r"front.json: not valid JSON .* line 1"):
        Front.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="peft-autoconfig search"):
        Front.load(tmp_path / "missing")


def test_binomial_standard_error():
    assert binomial_standard_error(0.8, 1280) == pytest.approx(math.sqrt(0.8 * 0.2 / 1280))
    assert binomial_standard_error(0.8, 1280) == pytest.approx(0.01118, abs=1e-5)  # "about 1.1 points" (issue 12)
    assert binomial_standard_error(1.0, 10) == 0.0
    with pytest.raises(ValueError, match="`n` must be a positive int"):
        binomial_standard_error(0.5, 0)
    with pytest.raises(ValueError, match=r"`accuracy` must be in \[0, 1\], got 1.5"):
        binomial_standard_error(1.5, 10)


def test_load_point_config_from_a_dict_a_folder_a_file_and_a_point(tmp_path):
    SMALL.save_pretrained(tmp_path / "cfg")
    for source in (config_to_dict(SMALL), tmp_path / "cfg", tmp_path / "cfg" / "adapter_config.json", str(tmp_path / "cfg")):
        assert load_point_config(source).to_dict() == SMALL.to_dict()
    assert isinstance(load_point_config(config_to_dict(UniPELTConfig(task_type="SEQ_CLS"))), UniPELTConfig)
    with pytest.raises(FrontError, match="field `peft_type` is missing"):
        load_point_config({"task_type": "SEQ_CLS"})
    with pytest.raises(FrontError, match=r"x field `peft_type` = 'FOO' is not a known PEFT type; known: \[.*'MIXED_PET'"):
        load_point_config({"peft_type": "FOO"}, where="x")
    with pytest.raises(FrontError, match="invalid MixedPetConfig: `lora_dropout`"):
        load_point_config(dict(config_to_dict(LORA), lora_dropout=2.0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder has no adapter_config.json"):
        load_point_config(tmp_path / "empty")
    with pytest.raises(FrontError, match="field `config` is null"):
        load_point_config(FrontPoint(name="full", kind="baseline", trainable_parameters=1))


def test_describe_config_says_exactly_what_a_config_adds():
    assert describe_config(SMALL) == "serial {0: 8, 3: 16} · layers 0, 3"
    assert describe_config(LORA) == "LoRA r4 (query, value) · layers all"
    mixed = MixedPetConfig(task_type="SEQ_CLS", parallel_adapter_size=16, prefix_length=5, lora_rank=8)
    assert describe_config(mixed) == "parallel 16 (x4) · LoRA r8 (q, v) · prefix 5 · layers all"
    assert describe_config(UniPELTConfig(task_type="SEQ_CLS")).endswith("· gated")
    assert describe_config(LoraConfig(r=8, target_modules=["value", "query"])) == "LORA r8 (query, value)"


def test_show_gives_the_standard_error_and_the_report(tmp_path, capsys):
    from peft_autoconfig.cli import main

    make_front().save(tmp_path)
    assert main(["show", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    p00 = next(line for line in text.splitlines() if line.startswith("p00"))
    assert f"0.7500 +- {binomial_standard_error(0.75, 400):.4f} (validation, n=400)" in p00
    assert "serial {0: 8, 3: 16} · layers 0, 3" in p00
    p01 = next(line for line in text.splitlines() if line.startswith("p01"))
    assert "0.8000 sd 0.0100 se 0.0110 (test, n=1280, seeds 0.7900/0.8000/0.8100)" in p01
    full = next(line for line in text.splitlines() if line.startswith("full_finetuning"))
    assert "22,000,000" in full and "(baseline)" in full and "0.8290" in full


def _string_constants(tree: ast.AST) -> set[str]:
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_front_json_and_config_loading_have_one_owner():
    """Only peft_autoconfig/front/ names front.json, builds configs from dicts and describes them."""
    owners = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        relative = path.relative_to(PACKAGE).as_posix()
        if "front.json" in _string_constants(tree):
            owners.setdefault("front.json", []).append(relative)
        if "from_peft_type" in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}:
            owners.setdefault("from_peft_type", []).append(relative)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in ("describe_config", "config_from_dict", "load_json"):
                owners.setdefault(node.name, []).append(relative)
    assert owners == {"front.json": ["front/files.py"], "from_peft_type": ["front/configs.py"],
                      "describe_config": ["front/configs.py"]}


def test_train_loads_a_point_a_search_output_and_names_the_flag_on_errors(tmp_path):
    from peft_autoconfig.commands.train import load_peft_config

    make_front().save(tmp_path)
    assert load_peft_config(str(tmp_path / "front" / "p00")).to_dict() == SMALL.to_dict()
    assert load_peft_config(str(tmp_path)).to_dict() == LORA.to_dict()  # a search output: its best point (p01)
    (tmp_path / "front" / "p00" / "adapter_config.json").write_text('{"peft_type": "FOO"}')
    with pytest.raises(FrontError, match=r"--config .*p00 field `peft_type` = 'FOO' is not a known PEFT type"):
        load_peft_config(str(tmp_path / "front" / "p00"))


def test_selection_and_report_constructors_fill_in_the_uncertainty():
    selection = Selection.measured("validation", "accuracy", 0.75, n=400)
    assert selection.standard_error == pytest.approx(math.sqrt(0.75 * 0.25 / 400)) and selection.n == 400
    assert Selection.measured("validation", "pearson", 0.75, n=400).standard_error is None  # not a proportion
    assert Selection.measured("validation", "accuracy", 0.75).standard_error is None  # n unknown
    report = Report.from_seeds("test", "accuracy", [0.79, 0.80, 0.81], n=1280)
    assert report.mean == pytest.approx(0.80) and report.sd == pytest.approx(0.01)
    assert report.standard_error == pytest.approx(binomial_standard_error(0.80, 1280)) and report.seeds == [0.79, 0.8, 0.81]
    loss = Report.from_seeds("test", "loss", [1.0, 2.0, 3.0])
    assert loss.sd == pytest.approx(1.0) and loss.standard_error == pytest.approx(1.0 / math.sqrt(3))
    single = Report.from_seeds("test", "accuracy", [0.8])
    assert (single.sd, single.standard_error) == (None, None)
    with pytest.raises(ValueError, match="at least one value"):
        Report.from_seeds("test", "accuracy", [])
