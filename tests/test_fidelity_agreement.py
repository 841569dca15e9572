"""The search's own check of its low fidelity: Kendall tau between consecutive levels over the promoted points,
written to front.json (`search.fidelity_agreement`) and printed by `show`."""

from __future__ import annotations

import json

import pytest
from scipy.stats import kendalltau

from peft_autoconfig.cli import main
from peft_autoconfig.front.stats import describe_fidelity_agreement
from peft_autoconfig.search import load_recipe, read_journal, run_search
from peft_autoconfig.search.export import fidelity_agreement
from peft_autoconfig.search.trial import TrialRecord
from test_search_fakes import write_recipe


def record(trial_id: int, x: dict, level: int, metric: float | None, seed: int = 0, kind: str = "search",
           status: str = "ok") -> TrialRecord:
    return TrialRecord(trial_id=trial_id, key=f"{level}|{json.dumps(x)}", kind=kind, name=None, x=x, config=None,
                       level=level, fidelity={}, seed=seed, status=status, error=None, metric_name="accuracy",
                       metric=metric, eval_split="validation", n_eval=100, standard_error=None,
                       trainable_parameters=1, objectives=None, F=[0.0, 1.0], wall_time_s=1.0)


def test_agreement_pairs_the_same_point_seed_and_split_only():
    points = [{"a": i} for i in range(6)]
    low = [0.50, 0.60, 0.55, 0.70, 0.65, 0.40]
    high = [0.71, 0.74, 0.72, 0.80, 0.77, 0.60]  # the same order: tau 1
    records = [record(i, x, 0, m) for i, (x, m) in enumerate(zip(points, low))]
    records += [record(10 + i, x, 1, m, kind="promotion") for i, (x, m) in enumerate(zip(points[:5], high[:5]))]
    records += [record(20, points[5], 1, 0.99, seed=1, kind="promotion"),     # another seed: not a pair
                record(21, points[5], 1, 0.99, kind="baseline"),             # a baseline: not a searched point
                record(22, {"a": 9}, 0, None, status="failed"), record(23, {"a": 9}, 1, 0.5, kind="promotion")]
    assert fidelity_agreement(records) == [{"levels": [0, 1], "n": 5, "kendall_tau": pytest.approx(1.0),
                                            "p_value": pytest.approx(kendalltau(low[:5], high[:5])[1])}]
    swapped = records[:6] + [record(10 + i, x, 1, m, kind="promotion")
                             for i, (x, m) in enumerate(zip(points[:5], reversed(high[:5])))]
    assert fidelity_agreement(swapped)[0]["kendall_tau"] == pytest.approx(kendalltau(low[:5], high[4::-1])[0])
    assert fidelity_agreement(records[:6] + records[6:9]) == []  # 3 common points: no tau
    tied = records[:6] + [record(10 + i, x, 1, 0.7, kind="promotion") for i, x in enumerate(points[:5])]
    entry = fidelity_agreement(tied)[0]  # a constant level: undefined, not NaN in JSON, and named
    assert (entry["kendall_tau"], entry["p_value"], entry["tied_level"]) == (None, None, 1)
    chance = [record(i, x, 0, 0.5812) for i, x in enumerate(points)] + records[6:11]
    assert fidelity_agreement(chance)[0]["tied_level"] == 0
    assert describe_fidelity_agreement(fidelity_agreement(chance)) == (
        "level 0 -> 1: Kendall tau undefined (level 0 scored them all alike) over 5 promoted points")


def test_a_search_reports_its_fidelity_agreement_in_front_json_and_show(tmp_path, tiny_bert_dir, synthetic_task_dir,
                                                                        capsys):
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:seed_noisy_evaluate",
                        algorithm={"name": "random", "n_trials": 12, "pop_size": 4},
                        fidelity={"levels": [{"train_subset": 64, "max_steps": 2}, {"train_subset": 128, "max_steps": 4}],
                                  "eta": 2})
    out = tmp_path / "out"
    result = run_search(load_recipe(path), out, progress=False)
    trials = read_journal(out / "journal.jsonl")
    level = {lvl: {json.dumps(t["x"], sort_keys=True): t["metric"] for t in trials if t["level"] == lvl and t["x"]}
             for lvl in (0, 1)}
    common = sorted(set(level[0]) & set(level[1]))
    assert len(common) >= 4
    tau, p_value = kendalltau([level[0][k] for k in common], [level[1][k] for k in common])
    agreement = result.document["search"]["fidelity_agreement"]
    assert agreement == [{"levels": [0, 1], "n": len(common), "kendall_tau": pytest.approx(tau),
                          "p_value": pytest.approx(p_value)}]
    assert json.loads((out / "front.json").read_text())["search"]["fidelity_agreement"] == agreement
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (f"fidelity agreement: level 0 -> 1: Kendall tau {tau:.2f} (p = {p_value:.2g}) over {len(common)} "
            "promoted points") in printed
