"""Pushing a pruned model of a prune-model output to the local fake Hub (tests/hub_server.py): files, card,
plain-transformers round trip, CLI, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants, snapshot_download
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from peft_autoconfig.backbone import SubNetwork, SuperNetwork
from peft_autoconfig.cli import main
from peft_autoconfig.hub import HubConfigError
from peft_autoconfig.hub.pruned import PRUNED_FRONT_FILE, push_pruned_model

from test_backbone_search import write_recipe
from test_hub import TOKEN, hub  # noqa: F401  (the local Hub fixture)

REPO = "org/tiny-bert-pruned"
MODEL_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def prune_output(tiny_bert_dir, synthetic_task_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("prune")
    recipe = write_recipe(tmp / "r.yaml", tiny_bert_dir, synthetic_task_dir,
                          search={"n_trials": 6, "objectives": ["metric", "parameters"]})
    assert main(["prune-model", str(recipe), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return tmp / "run"


def inputs() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(5, 50, (2, 6), generator=torch.Generator().manual_seed(0))}


def test_push_uploads_a_plain_model_with_its_card(prune_output, synthetic_task_dir, hub, tmp_path):  # noqa: F811
    document = json.loads((prune_output / "front.json").read_text())
    point = max(document["points"], key=lambda p: (p["metric"], -p["parameters"]))  # the default: best metric
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)

    result = push_pruned_model(prune_output, REPO, token=TOKEN, endpoint=hub.endpoint)

    expected = {"README.md", "pareto.png", PRUNED_FRONT_FILE} | MODEL_FILES
    assert set(result.files) == expected == set(api.list_repo_files(REPO)) - {".gitattributes"}
    assert api.list_repo_commits(REPO)[0].commit_id == result.commit_oid
    assert sum(1 for method, path in hub.requests if path.startswith(f"/api/models/{REPO}/commit/")) == 1
    local = Path(snapshot_download(REPO, endpoint=hub.endpoint, token=TOKEN, cache_dir=tmp_path / "cache"))

    # plain transformers: the pushed model is the point's sub-network of the super-network
    small = AutoModelForSequenceClassification.from_pretrained(local).eval()
    assert small.num_parameters() == point["parameters"]
    supernet = AutoModelForSequenceClassification.from_pretrained(prune_output / "supernet").eval()
    with torch.no_grad(), SuperNetwork(supernet).use(SubNetwork.from_dict(point["subnetwork"])):
        masked = supernet(**inputs()).logits
    with torch.no_grad():
        torch.testing.assert_close(small(**inputs()).logits, masked, atol=1e-5, rtol=0)
    tokenizer = AutoTokenizer.from_pretrained(local)
    assert tokenizer("good film")["input_ids"][0] == tokenizer.cls_token_id
    assert "local_files_only" not in json.loads((local / "tokenizer_config.json").read_text())

    card = ModelCard.load(local / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert "pruned" in card.data.tags and [r.metric_value for r in card.data.eval_results] == [point["metric"]]
    text = card.text
    assert f"| parameters | {point['parameters']:,} | {document['unpruned']['parameters']:,} |" in text
    assert f"{1000 * point['objectives']['latency_s']:.2f} ms" in text
    assert f"AutoModelForSequenceClassification.from_pretrained(\"{REPO}\")" in text
    assert "![" in text and "(pareto.png)" in text
    assert "heads are zeroed" in text  # a BERT export says so
    assert f"{point['name']}" in text and "importance" in text and "drop_top_layers" in text  # its baselines
    for path in local.iterdir():  # nothing local is published
        if path.suffix in (".json", ".md"):
            assert str(prune_output.parent) not in path.read_text() and str(synthetic_task_dir) not in path.read_text()
    published = json.loads((local / PRUNED_FRONT_FILE).read_text())
    assert published["points"] == document["points"] and published["model"].startswith("<local>/")


def test_push_cli_point_choice_and_point_folder(prune_output, tmp_path, capsys):
    document = json.loads((prune_output / "front.json").read_text())
    first = document["points"][0]
    assert main(["push", str(prune_output), "--repo-id", REPO, "--point", first["name"],
                 "--dry-run", str(tmp_path / "dry")]) == 0
    assert "dry run: wrote" in capsys.readouterr().out
    config = json.loads((tmp_path / "dry" / "config.json").read_text())
    assert config["num_hidden_layers"] == len(first["subnetwork"]["layers"])
    # a point folder pushes its own point
    result = push_pruned_model(prune_output / first["path"], REPO, dry_run=tmp_path / "dry2")
    assert (tmp_path / "dry2" / "config.json").read_bytes() == (tmp_path / "dry" / "config.json").read_bytes()
    assert set(result.files) >= MODEL_FILES
    # the PEFT push refuses it, naming the way (the CLI dispatches on its own)
    from peft_autoconfig.hub import push_to_hub

    with pytest.raises(HubConfigError, match="is a prune-model output.*push_pruned_model"):
        push_to_hub(prune_output, REPO, dry_run=tmp_path / "dry3")
    assert not (tmp_path / "dry3").exists()


def test_push_bad_input_names_the_field(prune_output, tmp_path, capsys):
    assert main(["push", str(prune_output), "--repo-id", REPO, "--point", "p99", "--dry-run", str(tmp_path / "d")]) == 1
    assert "`point` 'p99' is not in" in capsys.readouterr().err and not (tmp_path / "d").exists()
    with pytest.raises(HubConfigError, match="`retrained`: point 'p00' was not re-trained"):
        push_pruned_model(prune_output, REPO, point="p00", retrained=True, dry_run=tmp_path / "d")
    with pytest.raises(ValueError, match="`repo_id` must look like"):
        push_pruned_model(prune_output, "no-namespace", dry_run=tmp_path / "d")
    with pytest.raises(HubConfigError, match="not the folder of any point"):
        push_pruned_model(prune_output / "supernet", REPO, dry_run=tmp_path / "d")
    peft_folder = tmp_path / "peft"
    peft_folder.mkdir()
    assert main(["push", str(peft_folder), "--repo-id", REPO, "--point", "p00"]) == 2
    assert "apply to prune-model outputs only" in capsys.readouterr().err


def test_prune_model_push_flag(tiny_bert_dir, synthetic_task_dir, hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir, baselines=None,
                          search={"n_trials": 3, "objectives": ["metric", "parameters"]})
    assert main(["prune-model", str(recipe), "--out", str(tmp_path / "bad"), "--push", "nonamespace"]) == 2
    assert "`--push` must look like 'org/name'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    default_endpoint = constants.ENDPOINT
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)  # what HF_ENDPOINT would set
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "run"
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress", "--push", REPO, "--point", "p00"]) == 0
    assert f"to {REPO} in one commit" in capsys.readouterr().out
    monkeypatch.setattr(constants, "ENDPOINT", default_endpoint)  # download URLs are built from the import-time one
    downloaded = HfApi(endpoint=hub.endpoint, token=TOKEN).hf_hub_download(REPO, "config.json",
                                                                          cache_dir=str(tmp_path / "cache"))
    pushed = json.loads(Path(downloaded).read_text())
    exported = json.loads((out / "front" / "p00" / "config.json").read_text())
    assert pushed == exported


def test_push_a_retrained_point_sends_only_the_model(tiny_bert_dir, synthetic_task_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir, retrain={"max_steps": 2},
                          baselines=None, search={"n_trials": 3, "objectives": ["metric", "parameters"]})
    out = tmp_path / "run"
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    point = json.loads((out / "front.json").read_text())["points"][0]
    folder = out / point["retrained"]["path"]
    (folder / "training_args.bin").write_bytes(b"pickle")
    with pytest.warns(UserWarning, match="pickled weights are not uploaded"):
        result = push_pruned_model(out, REPO, point=point["name"], retrained=True, dry_run=tmp_path / "dry")
    assert set(result.files) == {"README.md", "pareto.png", PRUNED_FRONT_FILE} | MODEL_FILES
    assert (tmp_path / "dry" / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    card = (tmp_path / "dry" / "README.md").read_text()
    assert "then re-trained on its own" in card and f"{point['retrained']['metric']:.4f}" in card
    assert ModelCard.load(tmp_path / "dry" / "README.md").data.eval_results[0].metric_value == point["retrained"]["metric"]
    # the re-trained folder itself is recognised as that point's re-trained model
    again = push_pruned_model(folder, REPO, dry_run=tmp_path / "dry2")
    assert (tmp_path / "dry2" / "README.md").read_text() == card and again.files == result.files
