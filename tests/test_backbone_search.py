"""Stage 2 and the `prune-model` command: search, export of the front, resume, show, bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification

from peft_autoconfig.backbone import SubNetwork, SuperNetwork
from peft_autoconfig.cli import main


def write_recipe(path, model, task, **changes):
    recipe = {
        "model": str(model), "task": str(task), "seed": 0,
        "space": {"granularity": "medium"},
        "supernet": {"max_steps": 6, "batch_size": 16, "max_length": 16, "learning_rate": 3e-3, "num_random": 1},
        "search": {"algorithm": "nsga2", "n_trials": 8, "pop_size": 4, "eval_subset": 32},
        "latency": {"batch_size": 2, "sequence_length": 8, "repeats": 2},
    }
    for key, value in changes.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(recipe))
    return path


def journal_trials(out):
    return [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()[1:]]


def test_prune_model_end_to_end_and_show(tiny_bert_dir, synthetic_task_dir, tmp_path, capsys):
    recipe, out = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir), tmp_path / "run"
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    document = json.loads((out / "front.json").read_text())
    assert document["points"] and document["unpruned"]["parameters"] > 0
    assert (out / "pareto.png").stat().st_size > 1000
    supernet = AutoModelForSequenceClassification.from_pretrained(out / "supernet").eval()
    masks = SuperNetwork(supernet)
    inputs = torch.randint(5, 50, (2, 6))
    for point in document["points"]:
        small = AutoModelForSequenceClassification.from_pretrained(out / point["path"]).eval()
        assert small.num_parameters() == point["parameters"] <= document["unpruned"]["parameters"]
        with torch.no_grad(), masks.use(SubNetwork.from_dict(point["subnetwork"])):
            expected = supernet(input_ids=inputs).logits
        torch.testing.assert_close(small(input_ids=inputs).logits.detach(), expected, atol=1e-5, rtol=0)
        assert (out / point["path"] / "tokenizer_config.json").is_file()
    trials = journal_trials(out)
    assert trials[0]["name"] == "unpruned" and len(trials) >= 2
    assert all(t["objectives"]["latency_s"] > 0 for t in trials)
    capsys.readouterr()
    assert main(["prune-model", "--show", str(out)]) == 0
    table = capsys.readouterr().out
    assert "unpruned" in table and "p00" in table and "latency ms" in table
    assert main(["show", str(out)]) == 0 and capsys.readouterr().out == table  # the generic `show` too


def test_prune_model_resumes_a_killed_search(tiny_bert_dir, synthetic_task_dir, tmp_path, capsys):
    # without the measured latency the objectives are deterministic, so the resumed search replays exactly
    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir,
                          search={"objectives": ["metric", "parameters"]})
    out = tmp_path / "run"
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    document, trials = json.loads((out / "front.json").read_text()), journal_trials(out)
    supernet_time = (out / "supernet" / "DONE.json").stat().st_mtime_ns

    # the journal lost its last records and has a torn line; only those are scored again
    lines = (out / "journal.jsonl").read_text().splitlines(keepends=True)
    (out / "journal.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    capsys.readouterr()
    with pytest.warns(UserWarning, match="incomplete"):
        assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    assert f"({len(trials) - 2} scored now)" in capsys.readouterr().out
    resumed = json.loads((out / "front.json").read_text())
    assert [p["subnetwork"] for p in resumed["points"]] == [p["subnetwork"] for p in document["points"]]
    assert [t["key"] for t in journal_trials(out)] == [t["key"] for t in trials]
    assert (out / "supernet" / "DONE.json").stat().st_mtime_ns == supernet_time  # stage 1 was not redone


def test_mobo_searches_sub_networks_with_their_exact_size_and_resumes_identically(tiny_bert_dir, synthetic_task_dir,
                                                                                   tmp_path, capsys):
    pytest.importorskip("botorch")
    from peft_autoconfig.backbone.recipe import load_prune_recipe
    from peft_autoconfig.backbone.search import SubNetworkSpaceView, search_problem
    from peft_autoconfig.backbone.export import exported_parameters

    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir,
                          search={"algorithm": "mobo", "n_trials": 10, "pop_size": 4,
                                  "objectives": ["metric", "parameters"]})
    out = tmp_path / "run"
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    trials = [t for t in journal_trials(out) if t["kind"] == "search"]
    assert len(trials) >= 4 and json.loads((out / "front.json").read_text())["search"]["algorithm"] == "mobo"

    model = AutoModelForSequenceClassification.from_pretrained(out / "supernet")
    space = load_prune_recipe(recipe).build_space(model.config)
    problem = search_problem(space, ["metric", "parameters"], lambda sub: exported_parameters(model, sub))
    assert problem.objective_names == ["metric", "trainable_parameters"]
    view = problem.space
    assert isinstance(view, SubNetworkSpaceView) and view.max_cost() == model.num_parameters()
    for trial in trials:  # the size mobo computes instead of modelling is the size the scorer measured
        assert view.cost(trial["x"]) == trial["trainable_parameters"]
        assert view.key(trial["x"]) == trial["key"]

    lines = (out / "journal.jsonl").read_text().splitlines(keepends=True)
    (out / "journal.jsonl").write_text("".join(lines[:4]))  # killed after three scored sub-networks
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    assert [t["key"] for t in journal_trials(out) if t["kind"] == "search"] == [t["key"] for t in trials]

    # with measured latency as a third, modelled objective
    recipe = write_recipe(tmp_path / "r3.yaml", tiny_bert_dir, synthetic_task_dir,
                          search={"algorithm": "mobo", "n_trials": 8, "pop_size": 4})
    assert main(["prune-model", str(recipe), "--out", str(tmp_path / "run3"), "--no-progress"]) == 0
    assert len([t for t in journal_trials(tmp_path / "run3") if t["kind"] == "search"]) >= 4


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"space": {"min_heads": 0}}, "space.min_heads"),
        ({"space": {"min_layers": 3}}, "space.min_layers` must be in 1..2"),
        ({"space": {"granularity": "tiny"}}, "space.granularity"),
        ({"search": {"algorithm": "grid"}}, "search.algorithm.*allowed"),
        ({"search": {"algorithm": "s3pet"}}, r"search.algorithm`: must be an ask/tell strategy, one of \[.*'nsga2'.*\]; 's3pet' is a one-shot"),
        ({"supernet": {"epochs": 2}}, "unknown recipe field `supernet.epochs`"),
        ({"latency": {"sequence_length": 65}}, "latency.sequence_length` \\(65\\) is longer than the model's 64"),
        ({"latency": {"device": "gpu"}}, r"latency.device.*'auto', 'cpu' or 'cuda'"),
        *([] if __import__("torch").cuda.is_available() else
          [({"latency": {"device": "cuda"}}, r"`latency.device` is 'cuda' but no GPU is visible")]),
    ],
)
def test_bad_recipe_fails_before_training(changes, message, tiny_bert_dir, synthetic_task_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir, **changes)
    assert main(["prune-model", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run" / "supernet").exists()


def test_unsupported_family_names_the_field(make_tiny_model, synthetic_task_dir, tmp_path, capsys):
    model_dir = tmp_path / "gpt2"
    make_tiny_model("gpt2").save_pretrained(model_dir)
    recipe = write_recipe(tmp_path / "r.yaml", model_dir, synthetic_task_dir)
    assert main(["prune-model", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "`model.config.model_type` 'gpt2' is not supported" in capsys.readouterr().err
    assert not (tmp_path / "run" / "supernet").exists()


def test_lora_supernetwork_is_merged_before_the_search(tiny_bert_dir, synthetic_task_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir,
                          supernet={"lora": {"r": 4}},
                          search={"algorithm": "random", "n_trials": 4, "objectives": ["metric", "parameters"]})
    out = tmp_path / "run"
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    assert (out / "supernet" / "adapter_config.json").is_file()
    document = json.loads((out / "front.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    assert document["unpruned"]["parameters"] == base.num_parameters()  # LoRA merged away
    for point in document["points"]:
        small = AutoModelForSequenceClassification.from_pretrained(out / point["path"])
        assert small.num_parameters() == point["parameters"]
        assert not any("lora" in name for name in small.state_dict())


def test_llama_classifier_end_to_end(synthetic_task_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from conftest import WORDS, write_word_tokenizer

    model_dir = tmp_path / "llama"
    write_word_tokenizer(model_dir)
    torch.manual_seed(0)
    LlamaForSequenceClassification(LlamaConfig(
        vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=40, pad_token_id=0, num_labels=2,
    )).save_pretrained(model_dir)
    recipe = write_recipe(tmp_path / "r.yaml", model_dir, synthetic_task_dir, search={"n_trials": 4})
    assert main(["prune-model", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    for point in json.loads((tmp_path / "run" / "front.json").read_text())["points"]:
        small = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / point["path"])
        assert small.num_parameters() == point["parameters"] and small.config.model_type == "llama"


def test_retrain_front_models_once(tiny_bert_dir, synthetic_task_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir, retrain={"max_steps": 2},
                          search={"n_trials": 4, "objectives": ["metric", "parameters"]})
    out = tmp_path / "run"
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    points = json.loads((out / "front.json").read_text())["points"]
    stamps = {}
    for point in points:
        retrained = out / point["retrained"]["path"]
        assert 0 <= point["retrained"]["metric"] <= 1
        assert AutoModelForSequenceClassification.from_pretrained(retrained).num_parameters() == point["parameters"]
        stamps[retrained] = (retrained / "metrics.json").stat().st_mtime_ns
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0  # resumed: cached
    assert {path: (path / "metrics.json").stat().st_mtime_ns for path in stamps} == stamps
    assert "(re-trained: " in capsys.readouterr().out


def test_show_and_argument_errors(tmp_path, capsys):
    assert main(["prune-model", "--show", str(tmp_path)]) == 2
    assert "front.json does not exist" in capsys.readouterr().err
    assert main(["prune-model", "recipe.yaml"]) == 2
    assert "needs RECIPE and `--out DIR`" in capsys.readouterr().err


def test_latency_is_measured_on_the_asked_device(make_tiny_model):
    """`latency.device`: `cpu` times a copy on the CPU and leaves the model where it was; `cuda` without a GPU is a
    clear error naming the field."""
    import torch

    from peft_autoconfig.backbone.search import measure_latency

    model = make_tiny_model("bert").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert measure_latency(model, batch_size=2, sequence_length=8, repeats=2, device="cpu") > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"`latency.device` is 'cuda' but no GPU is visible"):
            measure_latency(model, batch_size=2, sequence_length=8, repeats=2, device="cuda")
