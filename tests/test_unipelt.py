"""Gated UniPELT (issue 3): the mixed method's guarantees with gates, gate inspection, pinning and pruning."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_configs, tiny_model
from peft import PeftConfig, PeftModel, get_peft_model
from peft.utils.peft_types import PeftType

from peft_autoconfig import MixedPetConfig, UniPELTConfig, count_trainable_parameters, count_training_parameters
from peft_autoconfig.tuners.blocks import Gate
from peft_autoconfig.tuners.layer import PetLayer
from peft_autoconfig.tuners.naming import parameter_block_type
from peft_autoconfig.tuners.unipelt import GateValue, format_gate_table, summarize_gates, to_mixed_config

FAMILIES = ["bert", "llama"]
ENCODERS = {"bert"}
KINDS = ("lora", "serial", "parallel", "prefix")
GATE_FLAGS = ("gate_lora", "gate_serial_adapter", "gate_parallel_adapter", "gate_prefix")


def task_type(family: str) -> str:
    return "SEQ_CLS" if family in ENCODERS else "CAUSAL_LM"


def unipelt(family: str, **overrides) -> UniPELTConfig:
    """Paper defaults plus a gated parallel adapter in layer 1, so every gated block kind is present."""
    kwargs = dict(parallel_adapter_size={1: 4}, task_type=task_type(family))
    kwargs.update(overrides)
    return UniPELTConfig(**kwargs)


def inputs(batch: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 100, (batch, length), generator=torch.Generator().manual_seed(seed))


def randomize_pet(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial PET and gate weights, as after training (fresh LoRA/adapters are a no-op)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if parameter_block_type(name) is not None:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def body_states(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Last hidden states (for encoders the classifier head is per adapter, so compare the body)."""
    return model(input_ids=x, output_hidden_states=True).hidden_states[-1]


def gates_of(model: torch.nn.Module) -> list[Gate]:
    return [m for m in model.modules() if isinstance(m, Gate)]


# -- config -------------------------------------------------------------------------------------------------------
def test_paper_defaults_and_peft_type():
    config = UniPELTConfig()
    assert config.peft_type == PeftType.UNIPELT
    assert (config.adapter_reduction_factor, config.prefix_length, config.lora_rank) == (16, 10, 8)
    assert all(config.gated(kind) for kind in KINDS)
    assert not config.is_mergeable


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"serial_adapter_size": 8}, ValueError, r"either `adapter_reduction_factor` or `serial_adapter_size`"),
        ({"adapter_reduction_factor": 0}, ValueError, r"`adapter_reduction_factor` must be a positive int or None"),
        ({"gate_lora": "yes"}, TypeError, r"`gate_lora` must be a bool"),
        ({"adapter_reduction_factor": None, "prefix_length": 0, "lora_rank": 0}, ValueError, r"adds no block"),
    ],
)
def test_bad_config_values_name_the_field(kwargs, error, message):
    with pytest.raises(error, match=message):
        UniPELTConfig(**kwargs)


# -- the mixed method's guarantees, with gates --------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_reproduce_config_and_logits_exactly(family, tmp_path):
    x = inputs()
    config = unipelt(family, prefix_length={0: 3, 2: 5}, gate_parallel_adapter=False)
    model = get_peft_model(tiny_model(family), config).eval()
    randomize_pet(model)
    with torch.no_grad():
        expected = model(input_ids=x).logits
    model.save_pretrained(tmp_path)
    loaded_config = PeftConfig.from_pretrained(tmp_path)
    assert type(loaded_config) is UniPELTConfig
    assert loaded_config.peft_type == PeftType.UNIPELT
    assert loaded_config.prefix_length == {0: 3, 2: 5}
    assert loaded_config.gate_parallel_adapter is False and loaded_config.gate_prefix is True
    reloaded = PeftModel.from_pretrained(tiny_model(family), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=x).logits, expected)
    assert reloaded.base_model.format_gate_values() == model.base_model.format_gate_values()


@pytest.mark.parametrize("family", FAMILIES)
def test_only_pet_and_gate_parameters_are_trainable(family):
    model = get_peft_model(tiny_model(family), unipelt(family))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(parameter_block_type(n) is not None or "modules_to_save" in n for n in trainable)
    gate_params = {n for n, _ in model.named_parameters() if ".gate.linear." in n}
    # 3 layers x (2 LoRA + serial + prefix) + 1 parallel, weight and bias each
    assert len(gate_params) == 2 * (3 * 4 + 1)
    assert gate_params <= trainable
    assert any("modules_to_save" in n for n in trainable) == (family in ENCODERS)


@pytest.mark.parametrize("family", FAMILIES)
def test_multiple_adapters_and_disable_adapter(family):
    x = inputs()
    base = tiny_model(family)
    with torch.no_grad():
        base_states = body_states(base, x)
    model = get_peft_model(base, unipelt(family)).eval()
    model.add_adapter("second", unipelt(family, adapter_reduction_factor=None, lora_rank=2, prefix_length=4))
    randomize_pet(model)
    tuner = model.base_model
    with torch.no_grad():
        first = body_states(model, x)
        model.set_adapter("second")
        assert all(".second." in n for n, p in model.named_parameters() if p.requires_grad and parameter_block_type(n) is not None)
        second = body_states(model, x)
        assert not torch.allclose(first, second)
        assert {row.block for row in tuner.gate_values("second")} >= {"prefix", "parallel"}
        assert {row.size for row in tuner.gate_values("second") if row.kind == "prefix"} == {4}
        assert not any(row.kind == "serial" for row in tuner.gate_values("second"))
        with model.disable_adapter():
            assert torch.equal(body_states(model, x), base_states)
        model.delete_adapter("default")
        assert torch.equal(body_states(model, x), second)
    assert not any(".default" in n for n, _ in model.named_parameters() if parameter_block_type(n) is not None)
    with pytest.raises(ValueError, match="Unknown adapter 'default'"):
        tuner.gate_values("default")


def test_a_mixed_adapter_cannot_join_a_unipelt_model():
    model = get_peft_model(tiny_model("bert"), unipelt("bert"))
    with pytest.raises(ValueError, match="different peft types"):
        model.add_adapter("plain", MixedPetConfig(lora_rank=2, task_type="SEQ_CLS"))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"gate_lora": False, "gate_prefix": False},
        {"adapter_reduction_factor": None, "serial_adapter_size": {0: 3, 2: 5}, "lora_rank": {1: 4}},
        {"layers_to_transform": [1, 2], "target_modules": None, "prefix_length": 2},
        {"adapter_reduction_factor": 4, "parallel_adapter_size": 6, "gate_serial_adapter": False},
    ],
    ids=["defaults", "some-gates-off", "per-layer", "layers", "parallel"],
)
def test_analytic_parameter_count_equals_real_count(family, overrides):
    config = unipelt(family, **overrides)
    model = get_peft_model(tiny_model(family), config)
    training = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and parameter_block_type(n) is not None)
    assert training == count_training_parameters(config, tiny_configs()[family])  # prefix MLP (512) while training
    model.base_model.fold_prefix_projection()
    real = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and parameter_block_type(n) is not None)
    assert real == count_trainable_parameters(config, tiny_configs()[family])
    # the gates account exactly for the difference to the same config without gates (hidden size 32: 33 each)
    no_gates = unipelt(family, **{**overrides, **{f: False for f in GATE_FLAGS}})
    assert not gates_of(get_peft_model(tiny_model(family), no_gates))
    ungated = count_trainable_parameters(no_gates, tiny_configs()[family])
    assert real - ungated == len(gates_of(model)) * 33
    assert len(gates_of(model)) == sum(
        1 for m in model.modules() if isinstance(m, PetLayer) for kind in KINDS
        if "default" in m.blocks(kind) and config.gated(kind)
    )


# -- gates --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_gates_receive_gradients_and_stay_strictly_between_0_and_1(family):
    torch.manual_seed(0)
    model = get_peft_model(tiny_model(family), unipelt(family)).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    x = inputs(batch=4, length=9)
    labels = torch.tensor([0, 1, 1, 0]) if family in ENCODERS else x
    for _ in range(3):  # LoRA B / adapter up start at zero, so their gates get gradients from step 2 on
        optimizer.zero_grad()
        model(input_ids=x, labels=labels).loss.backward()
        optimizer.step()
    gates = gates_of(model)
    assert len(gates) == 3 * 4 + 1
    for gate in gates:
        assert gate.linear.weight.grad is not None and gate.linear.weight.grad.abs().sum() > 0
    for row in model.base_model.gate_values():
        assert 0.0 < row.mean < 1.0 and row.count == 4
    last = torch.cat([g.last_value for g in gates])
    assert ((last > 0) & (last < 1)).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_gate_forced_to_zero_removes_its_block_exactly(family, kind):
    x = inputs()
    model = get_peft_model(tiny_model(family), unipelt(family)).eval()
    randomize_pet(model)
    # a twin with the same weights (not a deepcopy: the parallel adapter's input hook is bound to the original)
    without = get_peft_model(tiny_model(family), unipelt(family)).eval()
    without.load_state_dict(model.state_dict())
    for layer in without.modules():
        if isinstance(layer, PetLayer):
            blocks = layer.blocks(kind)
            if "default" in blocks:
                del blocks["default"]
    with torch.no_grad():
        before = body_states(model, x)
        changed = model.base_model.set_gate(kind, 0.0)
        assert changed == (1 if kind == "parallel" else 6 if kind == "lora" else 3)
        forced = body_states(model, x)
        assert not torch.equal(before, forced)
        assert torch.equal(forced, body_states(without, x))
        # pinning to None makes the gate learned again
        model.base_model.set_gate(kind, None)
        assert torch.equal(body_states(model, x), before)


@pytest.mark.parametrize("family", FAMILIES)
def test_all_gates_forced_to_zero_give_the_base_model_exactly(family):
    x = inputs()
    model = get_peft_model(tiny_model(family), unipelt(family)).eval()
    randomize_pet(model)
    with torch.no_grad():
        with model.disable_adapter():
            base = body_states(model, x)
        assert model.base_model.set_gate("all", 0) == 3 * 4 + 1
        assert torch.equal(body_states(model, x), base)
    table = model.base_model.gate_values()
    assert all(row.forced == 0.0 and row.mean == 0.0 for row in table)
    assert "=0" in model.base_model.format_gate_values()


def test_set_gate_selects_layers_and_blocks_and_rejects_bad_input():
    model = get_peft_model(tiny_model("bert"), unipelt("bert")).eval()
    tuner = model.base_model
    assert tuner.set_gate("lora/attention.self.value", 1.0, layers=[0, 2]) == 2
    model(input_ids=inputs())
    forced = {(r.layer, r.block) for r in tuner.gate_values() if r.forced is not None}
    assert forced == {(0, "lora/attention.self.value"), (2, "lora/attention.self.value")}
    with pytest.raises(ValueError, match=r"`block` 'adapter' has no gate.*Allowed values: \['all', .*'serial'"):
        tuner.set_gate("adapter", 0.0)
    with pytest.raises(ValueError, match=r"`value` must be a number in \[0, 1\]"):
        tuner.set_gate("serial", 1.5)
    with pytest.raises(ValueError, match=r"`layers` \[0\] have no 'parallel' gate; layers with one: \[1\]"):
        tuner.set_gate("parallel", 0.0, layers=[0])
    ungated = get_peft_model(tiny_model("bert"), unipelt("bert", gate_serial_adapter=False)).base_model
    with pytest.raises(ValueError, match=r"`block` 'serial' has no gate"):
        ungated.set_gate("serial", 0.0)


def test_gate_table_reports_every_gate_and_prints_one_line_per_layer():
    model = get_peft_model(tiny_model("bert"), unipelt("bert")).eval()
    tuner = model.base_model
    assert all(math.isnan(row.mean) and row.count == 0 for row in tuner.gate_values())
    with torch.no_grad():
        model(input_ids=inputs(batch=3))
    table = tuner.gate_values()
    blocks = {(r.layer, r.block) for r in table}
    per_layer = ("lora/attention.self.query", "lora/attention.self.value", "serial", "prefix")
    expected = {(i, b) for i in range(3) for b in per_layer}
    assert blocks == expected | {(1, "parallel")}
    sizes = {r.kind: r.size for r in table}
    assert sizes == {"lora": 8, "serial": 32 // 16, "parallel": 4, "prefix": 10}
    assert all(r.count == 3 and 0 < r.mean < 1 for r in table)
    # the row value is the batch mean of the gate: check one by hand
    serial0 = next(m for n, m in model.named_modules() if n.endswith("layer.0.output.dense")).blocks("serial")["default"]
    row = next(r for r in table if (r.layer, r.block) == (0, "serial"))
    assert row.mean == pytest.approx(float(serial0.gate.last_value.mean()))
    text = tuner.format_gate_values()
    lines = text.splitlines()
    assert lines[0].split() == ["layer", *per_layer[:3], "parallel", "prefix"]
    assert len(lines) == 2 + 3
    assert lines[2].split()[4] == "-"  # no parallel adapter in layer 0
    summary = summarize_gates(table, per_layer=True)
    assert set(k for k in summary if k.endswith("_mean")) == {f"gate/{k}_mean" for k in KINDS}
    assert summary["gate/parallel_mean"] == pytest.approx(next(r.mean for r in table if r.kind == "parallel"))
    assert summary["gate/layer0/serial"] == pytest.approx(row.mean)


def test_recorder_averages_over_batches():
    model = get_peft_model(tiny_model("llama"), unipelt("llama")).eval()
    tuner = model.base_model
    per_batch = []
    with torch.no_grad(), tuner.record_gates() as recorder:
        for seed in range(3):
            model(input_ids=inputs(batch=2, seed=seed))
            per_batch.append({(r.layer, r.block): r.mean for r in tuner.gate_values()})
        table = recorder.table(training=False)
        assert recorder.table(training=True)[0].count == 0
    for row in table:
        assert row.count == 6
        assert row.mean == pytest.approx(sum(b[(row.layer, row.block)] for b in per_batch) / 3, abs=1e-6)
    model(input_ids=inputs())  # hooks are gone after the context
    assert recorder.table(training=False)[0].count == 6


# -- pruning to a MixedPetConfig ----------------------------------------------------------------------------------
def _row(layer, block, mean, size, adapter="default"):
    return GateValue(layer=layer, block=block, adapter=adapter, size=size, mean=mean, count=4)


def test_to_mixed_config_keeps_open_gates_per_layer():
    config = UniPELTConfig(parallel_adapter_size={1: 4}, task_type="SEQ_CLS", lora_alpha=16.0)
    table = [
        _row(0, "lora/attention.self.query", 0.7, 8), _row(0, "lora/attention.self.value", 0.2, 8),
        _row(1, "lora/attention.self.query", 0.1, 8), _row(1, "lora/attention.self.value", 0.3, 8),
        _row(2, "lora/attention.self.query", 0.5, 8), _row(2, "lora/attention.self.value", 0.9, 8),
        _row(0, "serial", 0.6, 2), _row(1, "serial", 0.4, 2), _row(2, "serial", 0.55, 2),
        _row(1, "parallel", 0.8, 4),
        _row(0, "prefix", 0.1, 10), _row(1, "prefix", 0.2, 10), _row(2, "prefix", 0.3, 10),
    ]
    mixed = to_mixed_config(config, table, threshold=0.5)
    assert type(mixed) is MixedPetConfig and mixed.peft_type == PeftType.MIXED_PET
    assert mixed.serial_adapter_size == {0: 2, 2: 2}
    assert mixed.parallel_adapter_size == {1: 4}
    assert mixed.prefix_length == {}
    assert mixed.lora_rank == {0: 8, 2: 8}
    assert mixed.target_modules == ["attention.self.query", "attention.self.value"]
    assert (mixed.lora_alpha, mixed.task_type) == (16.0, "SEQ_CLS")
    # a higher threshold drops more; value never opens anywhere then
    strict = to_mixed_config(config, [r.as_dict() for r in table], threshold=0.75)
    assert strict.target_modules == ["attention.self.value"] and strict.lora_rank == {2: 8}
    assert strict.serial_adapter_size == {} and strict.parallel_adapter_size == {1: 4}
    with pytest.raises(ValueError, match=r"Every gate is below `threshold`=0.95.*gate/lora_mean="):
        to_mixed_config(config, table, threshold=0.95)
    with pytest.raises(ValueError, match=r"`threshold` must be in \[0, 1\]"):
        to_mixed_config(config, table, threshold=2)
    with pytest.raises(ValueError, match="several adapters"):
        to_mixed_config(config, table + [_row(0, "serial", 0.9, 2, adapter="other")])


@pytest.mark.parametrize("family", FAMILIES)
def test_trained_model_converts_to_a_buildable_mixed_config(family):
    model = get_peft_model(tiny_model(family), unipelt(family)).eval()
    tuner = model.base_model
    with pytest.raises(ValueError, match="no value yet"):
        tuner.to_mixed_config()
    tuner.set_gate("prefix", 0.0)
    tuner.set_gate("lora", 0.0, layers=[0])
    tuner.set_gate("serial", 1.0)
    tuner.set_gate("lora", 0.9, layers=[1, 2])
    tuner.set_gate("parallel", 0.2)
    with torch.no_grad():
        model(input_ids=inputs())
    mixed = tuner.to_mixed_config(threshold=0.5)
    assert mixed.prefix_length == {} and mixed.parallel_adapter_size == {}
    assert mixed.serial_adapter_size == {0: 2, 1: 2, 2: 2}
    assert mixed.lora_rank == {1: 8, 2: 8}
    pruned = get_peft_model(tiny_model(family), mixed)
    real = sum(p.numel() for n, p in pruned.named_parameters() if parameter_block_type(n) is not None)
    assert real == count_trainable_parameters(mixed, tiny_configs()[family])
    assert real < count_trainable_parameters(unipelt(family), tiny_configs()[family])
    tuner.set_gate("all", 0.0)
    with pytest.raises(ValueError, match="Every gate is below"):
        tuner.to_mixed_config(threshold=0.5)


# -- merging ------------------------------------------------------------------------------------------------------
def test_gated_lora_refuses_to_merge_and_ungated_lora_merges():
    x = inputs()
    gated = UniPELTConfig(adapter_reduction_factor=None, prefix_length=0, task_type="CAUSAL_LM")
    assert gated.gated("lora") and not gated.is_mergeable
    model = get_peft_model(tiny_model("llama"), gated)
    with pytest.raises(ValueError, match=r"Cannot merge adapter 'default'.*gates"):
        model.merge_and_unload()
    for layer in model.modules():
        if isinstance(layer, PetLayer) and "default" in layer.blocks("lora"):
            with pytest.raises(ValueError, match="gated LoRA cannot be folded"):
                layer.merge()
            break
    ungated = UniPELTConfig(adapter_reduction_factor=None, prefix_length=0, gate_lora=False, task_type="CAUSAL_LM")
    model = get_peft_model(tiny_model("llama"), ungated).eval()
    randomize_pet(model)
    with torch.no_grad():
        expected = model(input_ids=x).logits
        merged = model.merge_and_unload()
        assert torch.allclose(merged(input_ids=x).logits, expected, atol=1e-5)


# -- padding: gates average over real tokens only ------------------------------------------------------------------
def _padded_pair(family: str, length: int = 7, padded_to: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A sentence alone, and the same sentence padded (right for encoders, left for decoders) beside a full row."""
    sentence = inputs(batch=1, length=length, seed=3)
    other = inputs(batch=1, length=padded_to, seed=4)
    pad = torch.zeros(1, padded_to - length, dtype=torch.long)
    real = torch.ones(1, length, dtype=torch.long)
    if family in ENCODERS:
        ids, mask = torch.cat([sentence, pad], 1), torch.cat([real, pad], 1)
    else:
        ids, mask = torch.cat([pad, sentence], 1), torch.cat([pad, real], 1)
    return sentence, torch.cat([ids, other]), torch.cat([mask, torch.ones_like(other)])


def positions(family: str, mask: torch.Tensor) -> dict:
    """Decoders number left-padded tokens from the first real one (as `generate` does); prefixes are not rotated."""
    return {} if family in ENCODERS else {"position_ids": (mask.cumsum(-1) - 1).clamp_min(0)}


@pytest.mark.parametrize("family", FAMILIES)
def test_gates_and_logits_do_not_depend_on_padding(family):
    model = get_peft_model(tiny_model(family), unipelt(family)).eval()
    randomize_pet(model)
    tuner = model.base_model
    sentence, batch, mask = _padded_pair(family)
    with torch.no_grad():
        alone = model(input_ids=sentence).logits
        alone_gates = [g.last_value.clone() for g in gates_of(model)]
        alone_rows = [r.mean for r in tuner.gate_values()]
        padded = model(input_ids=batch, attention_mask=mask, **positions(family, mask)).logits
    padded_gates = [g.last_value[:1] for g in gates_of(model)]
    for a, b in zip(alone_gates, padded_gates):
        assert torch.allclose(a, b, atol=1e-6), (a, b)
    real = slice(None) if family in ENCODERS else slice(-sentence.shape[1], None)
    assert torch.allclose(alone, padded[:1, real], atol=1e-6)
    # the table of a batch of one padded sentence equals the unpadded one
    with torch.no_grad():
        model(input_ids=batch[:1], attention_mask=mask[:1], **positions(family, mask[:1]))
    assert [r.mean for r in tuner.gate_values()] == pytest.approx(alone_rows, abs=1e-6)


def test_gates_without_a_mask_use_every_token_also_from_inputs_embeds():
    model = get_peft_model(tiny_model("bert"), unipelt("bert")).eval()
    randomize_pet(model)
    x = inputs(batch=2, length=6)
    with torch.no_grad():
        from_ids = model(input_ids=x).logits
        gates = [g.last_value.clone() for g in gates_of(model)]
        embeds = model.get_input_embeddings()(x)
        from_embeds = model(inputs_embeds=embeds, attention_mask=torch.ones(2, 6)).logits
    assert torch.allclose(from_ids, from_embeds, atol=1e-6)
    assert all(torch.allclose(a, g.last_value, atol=1e-6) for a, g in zip(gates, gates_of(model)))


def test_token_mask_from_2d_and_4d_attention_masks():
    from peft_autoconfig.tuners.unipelt.context import token_mask_of

    padding = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    causal = torch.tril(torch.ones(4, 4, dtype=torch.bool))
    allowed = causal[None, None] & padding.bool()[:, None, None, :]
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    assert token_mask_of(None) is None
    for mask in (padding, allowed, additive):
        assert torch.equal(token_mask_of(mask), padding.float())
    with pytest.raises(ValueError, match=r"`attention_mask` must be 2-D .* or 4-D .*, got shape \(2, 4, 4\)"):
        token_mask_of(allowed[:, 0])


def test_to_mixed_config_decisions_do_not_depend_on_padding():
    model = get_peft_model(tiny_model("bert"), unipelt("bert")).eval()
    randomize_pet(model)
    tuner = model.base_model
    rows = _synthetic_dataset(24, seed=5)
    ids = torch.stack([r["input_ids"] for r in rows])
    mask = torch.stack([r["attention_mask"] for r in rows])
    tables = []
    with torch.no_grad():
        for padded_to in (8, 64):
            extra = torch.zeros(len(rows), padded_to - 8, dtype=torch.long)
            with tuner.record_gates() as recorder:
                for start in range(0, len(rows), 8):
                    part = slice(start, start + 8)
                    model(input_ids=torch.cat([ids[part], extra[part]], 1),
                          attention_mask=torch.cat([mask[part], extra[part]], 1))
            tables.append(recorder.table(training=False))
    short, long = tables
    assert [r.mean for r in long] == pytest.approx([r.mean for r in short], abs=1e-6)
    means = sorted({r.mean for r in short})
    thresholds = [(a + b) / 2 for a, b in zip(means, means[1:]) if b - a > 1e-4]
    assert len(thresholds) > 5
    for threshold in thresholds:
        try:
            expected = tuner.to_mixed_config(short, threshold=threshold).to_dict()
        except ValueError:
            continue
        assert tuner.to_mixed_config(long, threshold=threshold).to_dict() == expected, threshold


# -- decoders: causal gates and the KV cache ------------------------------------------------------------------------
DECODERS = ["llama", "gpt2"]


def _decoder(family: str, attn_implementation: str = "sdpa"):
    model = get_peft_model(tiny_model(family, attn_implementation), unipelt(family)).eval()
    randomize_pet(model)
    return model


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_gates_never_see_future_tokens(family):
    model = _decoder(family)
    x = inputs(batch=2, length=10)
    with torch.no_grad():
        full = model(input_ids=x).logits
        for k in (1, 4, 9):
            assert torch.allclose(model(input_ids=x[:, :k]).logits, full[:, :k], atol=1e-5), k


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("family", DECODERS)
def test_incremental_decoding_with_a_cache_equals_the_full_forward(family, attn_implementation):
    model = _decoder(family, attn_implementation)
    x = inputs(batch=2, length=10)
    mask = torch.ones_like(x)
    mask[1, :3] = 0  # the second row is left-padded
    with torch.no_grad():
        position_ids = positions("llama", mask)["position_ids"]
        full = model(input_ids=x, attention_mask=mask, position_ids=position_ids).logits
        out = model(input_ids=x[:, :4], attention_mask=mask[:, :4], position_ids=position_ids[:, :4], use_cache=True)
        cache = out.cache
        steps = [out.logits]
        for start, stop in ((4, 5), (5, 7), (7, 8), (8, 10)):  # one token and two tokens at a time
            out = model(
                input_ids=x[:, start:stop], attention_mask=mask[:, :stop], position_ids=position_ids[:, start:stop],
                cache=cache, use_cache=True,
            )
            steps.append(out.logits)
    incremental = torch.cat(steps, dim=1)
    assert torch.allclose(incremental[0], full[0], atol=1e-5)
    assert torch.allclose(incremental[1, 3:], full[1, 3:], atol=1e-5)


@pytest.mark.parametrize("family", DECODERS)
def test_greedy_generate_with_a_cache_equals_step_by_step_argmax(family):
    model = _decoder(family)
    prompt = inputs(batch=2, length=5)
    with torch.no_grad():
        generated = model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
            use_cache=True, eos_token_id=None,
        )
        sequence = prompt
        for _ in range(6):
            logits = model(input_ids=sequence, use_cache=False).logits[:, -1]
            sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, sequence)
    assert all(r.count == 2 and 0 < r.mean < 1 for r in model.base_model.gate_values())


def test_beam_search_with_a_cache_equals_beam_search_without():
    """Beam search reorders the cache between steps: the gates' running sums must follow their beams."""
    model = _decoder("llama")
    options = dict(
        max_new_tokens=8, do_sample=False, num_beams=4, eos_token_id=None, return_dict_in_generate=True,
        output_scores=True,
    )
    for seed in range(3):
        prompt = inputs(batch=2, length=5, seed=seed)
        mask = torch.ones_like(prompt)
        with torch.no_grad():
            cached = model.generate(input_ids=prompt, attention_mask=mask, use_cache=True, **options)
            uncached = model.generate(input_ids=prompt, attention_mask=mask, use_cache=False, **options)
        assert torch.equal(cached.sequences, uncached.sequences), seed
        assert torch.allclose(cached.sequences_scores, uncached.sequences_scores, atol=1e-5), seed


def test_a_cache_built_elsewhere_is_refused():
    model = _decoder("llama")
    x = inputs(batch=1, length=6)
    with torch.no_grad():
        with model.disable_adapter():
            cache = model(input_ids=x[:, :5], use_cache=True).cache
        with pytest.raises(RuntimeError, match="KV cache holds 5 tokens but no UniPELT gate sums"):
            model(input_ids=x[:, 5:], cache=cache, use_cache=True)


# -- pins are saved with the adapter ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_gate_pins_survive_save_and_load(family, tmp_path):
    model = get_peft_model(tiny_model(family), unipelt(family)).eval()
    randomize_pet(model)
    tuner = model.base_model
    tuner.set_gate("serial", 0.0, layers=[1])
    tuner.set_gate("lora", 0.75)
    tuner.set_gate("lora", None, layers=[2])
    tuner.set_gate("parallel", 1.0)
    x = inputs()
    with torch.no_grad():
        expected = model(input_ids=x).logits
    pins = tuner.peft_config["default"].gate_pins
    lora_paths = sorted({r.block for r in tuner.gate_values() if r.kind == "lora"})
    assert pins == {"1.serial": 0.0, "1.parallel": 1.0, **{f"{i}.{p}": 0.75 for i in (0, 1) for p in lora_paths}}
    model.save_pretrained(tmp_path)
    assert PeftConfig.from_pretrained(tmp_path).gate_pins == pins
    reloaded = PeftModel.from_pretrained(tiny_model(family), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=x).logits, expected)
    forced = {(r.layer, r.block): r.forced for r in reloaded.base_model.gate_values()}
    assert forced == {(r.layer, r.block): r.forced for r in tuner.gate_values()}
    reloaded.base_model.set_gate("all", None)
    assert reloaded.base_model.peft_config["default"].gate_pins == {}


@pytest.mark.parametrize(
    ("pins", "error", "message"),
    [
        ({"x.serial": 0.0}, ValueError, r"`gate_pins` key 'x.serial' must be '<layer>.<block>'"),
        ({"0.adapter": 0.0}, ValueError, r"`gate_pins` key '0.adapter'.*block must be one of"),
        ({"0.serial": 1.5}, ValueError, r"`gate_pins\['0.serial'\]` must be a number in \[0, 1\], got 1.5"),
        ({"0.serial": True}, ValueError, r"`gate_pins\['0.serial'\]` must be a number"),
        ([("0.serial", 1.0)], TypeError, r"`gate_pins` must be a dict"),
    ],
)
def test_bad_gate_pins_name_the_field(pins, error, message):
    with pytest.raises(error, match=message):
        UniPELTConfig(gate_pins=pins)


def test_a_pin_without_its_gate_is_refused_when_the_model_is_built():
    config = unipelt("bert", gate_pins={"7.serial": 0.0})
    with pytest.raises(ValueError, match=r"`gate_pins` key '7.serial' has no gate in this model"):
        get_peft_model(tiny_model("bert"), config)


# -- BERT-base parameter count ------------------------------------------------------------------------------------
def test_bert_base_parameter_count_matches_the_papers_order():
    from transformers import BertConfig, BertModel

    bert_base = BertConfig()  # hidden 768, 12 layers, 12 heads, intermediate 3072
    config = UniPELTConfig()
    analytic = count_trainable_parameters(config, bert_base)
    h, layers, heads, head_dim = 768, 12, 12, 64
    lora = 2 * (8 * (h + h) + (h + 1))  # query and value, each with its gate
    serial = 2 * h * (h // 16) + h // 16 + h + (h + 1)
    prefix = 2 * 10 * heads * head_dim + (h + 1)  # keys and values, stored flat
    assert analytic == layers * (lora + serial + prefix) == 1_410_672
    torch.manual_seed(0)
    base = BertModel(bert_base)
    base_count = sum(p.numel() for p in base.parameters())
    assert base_count == 109_482_240
    model = get_peft_model(base, config)
    model.base_model.fold_prefix_projection()  # the 512-wide prefix MLP is trained, then saved folded (flat)
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad) == analytic
    percent = 100 * analytic / base_count
    assert 1.0 <= percent <= 1.3, percent
    assert round(percent, 2) == 1.29


# -- Trainer callback ---------------------------------------------------------------------------------------------
def _synthetic_dataset(n: int, seed: int) -> list[dict]:
    """Token ids with a learnable label (whether token 7 appears), padded to length 8."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(4, 9, (1,), generator=generator))
        ids = torch.randint(8, 100, (8,), generator=generator)
        label = int(torch.rand(1, generator=generator) < 0.5)
        if label:
            ids[int(torch.randint(0, length, (1,), generator=generator))] = 7
        mask = (torch.arange(8) < length).long()
        rows.append({"input_ids": ids * mask, "attention_mask": mask, "labels": label})
    return rows


@pytest.mark.parametrize("per_layer", [False, True])
def test_gate_logging_callback_in_a_real_trainer_run(per_layer, tmp_path):
    from transformers import Trainer, TrainingArguments

    from peft_autoconfig.tuners.unipelt import GateLoggingCallback

    model = get_peft_model(tiny_model("bert"), unipelt("bert"))
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8, per_device_eval_batch_size=16,
        learning_rate=5e-3, logging_steps=2, eval_strategy="steps", eval_steps=4, save_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
    )
    eval_set = _synthetic_dataset(24, seed=1)
    trainer = Trainer(model=model, args=args, train_dataset=_synthetic_dataset(64, seed=0), eval_dataset=eval_set)
    callback = GateLoggingCallback.attach(trainer, per_layer=per_layer)
    assert trainer.callback_handler.callbacks[0] is callback
    trainer.train()

    kinds = [f"gate/{k}_mean" for k in KINDS]
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    eval_logs = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert len(train_logs) == 2 and len(eval_logs) == 1
    for entry in train_logs:
        for key in kinds:
            assert 0.0 < entry[key] < 1.0, (key, entry)
        layer_keys = [k for k in entry if k.startswith("gate/layer")]
        assert len(layer_keys) == (3 * 4 + 1 if per_layer else 0)
        assert all(0.0 < entry[k] < 1.0 for k in layer_keys)
    for key in kinds:
        assert 0.0 < eval_logs[0]["eval_" + key] < 1.0
        assert key not in eval_logs[0]

    metrics = trainer.evaluate()
    # the logged eval means are the means over the evaluation set: recompute them by hand
    tuner = model.base_model
    with torch.no_grad(), tuner.record_gates() as recorder:
        model.eval()
        for start in range(0, len(eval_set), 16):
            batch = eval_set[start : start + 16]
            model(
                input_ids=torch.stack([r["input_ids"] for r in batch]),
                attention_mask=torch.stack([r["attention_mask"] for r in batch]),
            )
        expected = summarize_gates(recorder.table(training=False), prefix="eval_gate/")
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-5), key


def test_gate_logging_callback_needs_a_unipelt_model(tmp_path):
    from transformers import Trainer, TrainingArguments

    from peft_autoconfig.tuners.unipelt import GateLoggingCallback

    model = get_peft_model(tiny_model("bert"), MixedPetConfig(lora_rank=2, task_type="SEQ_CLS"))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=1)
    with pytest.raises(TypeError, match="needs a PEFT model with a `UniPELTConfig` adapter"):
        Trainer(model=model, args=args, train_dataset=_synthetic_dataset(8, 0), callbacks=[GateLoggingCallback()])
