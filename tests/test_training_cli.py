"""`peft-autoconfig train`: config folders, JSON output, saved files, and one-line user errors."""

from __future__ import annotations

import json
import re

import pytest

from peft_autoconfig import MixedPetConfig
from peft_autoconfig.cli import main
from peft_autoconfig.commands.train import load_peft_config


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("front-point")
    MixedPetConfig(lora_rank=4, parallel_adapter_size=8, task_type="SEQ_CLS").save_pretrained(directory)
    return directory


def test_train_command_prints_json_and_saves_adapter(tiny_bert_dir, synthetic_task_dir, config_dir, tmp_path, capsys):
    output_dir = tmp_path / "out"
    code = main(["train", "--model", str(tiny_bert_dir), "--task", str(synthetic_task_dir), "--config", str(config_dir),
                 "--max-steps", "3", "--learning-rate", "0.05", "--learning-rates", "lora=0.02,head=0.01",
                 "--warmup-ratio", "0.1", "--weight-decay", "0.01", "--eval-subset", "16", "--output-dir", str(output_dir),
                 "--group-by-length", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["metric_name"] == "accuracy" and len(result["loss_history"]) == 3
    assert result["trainable_parameters"] > 0 and result["output_dir"] == str(output_dir)
    saved = json.loads((output_dir / "metrics.json").read_text())
    assert saved["metrics"] == result["metrics"] and saved["run"]["eval_subset"] == 16
    assert saved["run"]["learning_rates"] == {"lora": 0.02, "serial_adapter": 0.05, "parallel_adapter": 0.05,
                                              "prefix": 0.05, "prefix_mlp": 0.05, "bias": 0.05, "gate": 0.05, "head": 0.01, "full": 0.05}
    assert (saved["run"]["warmup_ratio"], saved["run"]["weight_decay"], result["eval_examples"]) == (0.1, 0.01, 16)
    assert saved["run"]["group_by_length"] is True
    assert (output_dir / "adapter_model.safetensors").is_file()


def test_config_folder_and_its_json_file_both_load(config_dir):
    for source in (config_dir, config_dir / "adapter_config.json"):
        config = load_peft_config(str(source))
        assert isinstance(config, MixedPetConfig) and (config.lora_rank, config.parallel_adapter_size) == (4, 8)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "no_such_task", "--config", "CONFIG"], "unknown task `no_such_task`"),
        (["--task", "TASK", "--config", "EMPTY"], "folder has no adapter_config.json"),
        (["--task", "TASK", "--config", "some-org/missing-config"], "not a local folder, and the Hub repo could not be read"),
        (["--task", "TASK", "--config", "CONFIG", "--text-columns", "review"], "column `review` not found"),
        (["--task", "THREE_CLASSES", "--config", "CONFIG", "--num-labels", "2"], r"labels \[0, 1, 2\].*num_labels=2"),
        (["--task", "TASK", "--config", "CONFIG", "--learning-rates", "lora=1e-3,adapter=1e-3"],
         r"`--learning-rates` names an unknown block type 'adapter'; allowed: lora, serial_adapter, .*head, full"),
        (["--task", "TASK", "--config", "CONFIG", "--learning-rates", "lora=1e-3", "--learning-rates", "prefix=0"],
         r"`--learning-rates.prefix` must be > 0, got 0.0"),
        (["--task", "TASK", "--config", "CONFIG", "--learning-rates", "lora"], r"entry 'lora' is not BLOCK=RATE"),
        (["--task", "TASK", "--config", "CONFIG", "--learning-rates", "lora=fast"], r"`--learning-rates lora` must be a number"),
        (["--task", "TASK", "--config", "CONFIG", "--warmup-ratio", "1.5"], r"`warmup_ratio` must be in \[0, 1\)"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(argv, message, tiny_bert_dir, synthetic_task_dir, config_dir,
                                                   tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "three").mkdir()
    (tmp_path / "three" / "train.csv").write_text("sentence,label\ngood,0\nbad,1\nfine,2\n")
    replace = {"TASK": str(synthetic_task_dir), "CONFIG": str(config_dir), "EMPTY": str(tmp_path / "empty"),
               "THREE_CLASSES": str(tmp_path / "three")}
    code = main(["train", "--model", str(tiny_bert_dir), "--quiet"] + [replace.get(arg, arg) for arg in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("peft-autoconfig train: error:") and len(err.strip().splitlines()) == 1
    assert re.search(message, err)


def test_config_and_full_finetuning_are_exclusive(tiny_bert_dir, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", str(tiny_bert_dir), "--task", "rotten_tomatoes", "--config", "x", "--full-finetuning"])
    assert "not allowed with argument" in capsys.readouterr().err
