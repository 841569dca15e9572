"""Unstructured weight masks (issue 16): stored in the adapter's safetensors, applied on load, kept while training,
counted as non-zero weights, exact LoRA merge, clear errors for bad masks."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_configs, tiny_model
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from peft_autoconfig import MixedPetConfig, count_trainable_parameters
from peft_autoconfig.tuners.naming import parameter_block_type
from peft_autoconfig.tuners.weight_masks import current_masks, mask_key, save_mask_file

BERT = tiny_configs()["bert"]
QUERY_A = "bert.encoder.layer.0.attention.self.query.mixed_pet_lora.A.weight"


def inputs() -> torch.Tensor:
    return torch.randint(5, 100, (2, 7), generator=torch.Generator().manual_seed(0))


def random_masks(config: MixedPetConfig, density: float = 0.5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random bool masks for every PET weight of `config` on tiny BERT."""
    model = get_peft_model(tiny_model("bert"), config)
    generator = torch.Generator().manual_seed(seed)
    return {
        mask_key(name, "default"): torch.rand(p.shape, generator=generator) < density
        for name, p in model.named_parameters() if parameter_block_type(name) is not None
    }


def train_step(model) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model(inputs(), labels=torch.tensor([0, 1])).loss.backward()
        optimizer.step()
    model.eval()


def pet_weights(model) -> dict[str, torch.Tensor]:
    return {mask_key(n, "default"): p for n, p in model.named_parameters() if parameter_block_type(n) is not None}


def test_masks_stay_zero_through_training_and_round_trip_through_safetensors(tmp_path):
    plain = MixedPetConfig(lora_rank=4, parallel_adapter_size=3, prefix_length=2, bias_tuning=1, task_type="SEQ_CLS")
    masks = random_masks(plain)
    save_mask_file(tmp_path / "masks.safetensors", masks)
    config = MixedPetConfig(**{**plain.to_dict(), "weight_masks": str(tmp_path / "masks.safetensors")})
    model = get_peft_model(tiny_model("bert"), config)
    train_step(model)
    weights = pet_weights(model)
    for key, mask in masks.items():
        assert torch.count_nonzero(weights[key][~mask]) == 0, key
    query_a = weights[QUERY_A]  # random init: every kept entry is non-zero
    assert torch.count_nonzero(query_a) == int(masks[QUERY_A].sum())
    nonzero = sum(int(torch.count_nonzero(w)) for w in weights.values())
    assert nonzero <= count_trainable_parameters(config, BERT)  # zero-initialised entries may still be 0
    assert count_trainable_parameters(config, BERT) == count_trainable_parameters(plain, BERT) - sum(
        int((~m).sum()) for m in masks.values())
    with torch.no_grad():
        expected = model(inputs()).logits
    model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    saved_masks = {k: v for k, v in saved.items() if k.endswith("_mask")}
    assert len(saved_masks) == len(masks) and all(v.dtype == torch.bool for v in saved_masks.values())
    (tmp_path / "masks.safetensors").unlink()  # a saved adapter brings its own masks
    with pytest.warns(UserWarning, match="masks are expected from the adapter's safetensors"):
        reloaded = PeftModel.from_pretrained(tiny_model("bert"), tmp_path / "adapter", is_trainable=True)
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(inputs()).logits, expected)
    assert all(torch.equal(current_masks(reloaded)[k], m) for k, m in masks.items())
    train_step(reloaded)  # masks are kept while training further
    for key, weight in pet_weights(reloaded).items():
        assert torch.count_nonzero(weight[~masks[key]]) == 0, key


def test_masked_lora_merges_exactly(tmp_path):
    plain = MixedPetConfig(lora_rank=4, target_modules=["query", "value", "output.dense"], task_type="SEQ_CLS")
    save_mask_file(tmp_path / "m.safetensors", random_masks(plain, 0.3))
    model = get_peft_model(tiny_model("bert"), MixedPetConfig(**{**plain.to_dict(), "weight_masks": str(tmp_path / "m.safetensors")}))
    train_step(model)
    with torch.no_grad():
        expected = model(inputs()).logits
        merged = model.merge_and_unload()
        assert torch.allclose(merged(inputs()).logits, expected, atol=1e-5)


def test_mask_of_the_wrong_shape_is_a_clear_error(tmp_path):
    config = MixedPetConfig(lora_rank=4, task_type="SEQ_CLS")
    save_mask_file(tmp_path / "m.safetensors", {QUERY_A: torch.ones(3, 32, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"mask '.*query.mixed_pet_lora.A.weight' has shape \(3, 32\), but the weight has shape \(4, 32\)"):
        get_peft_model(tiny_model("bert"), MixedPetConfig(**{**config.to_dict(), "weight_masks": str(tmp_path / "m.safetensors")}))


def test_mask_on_a_block_the_config_does_not_have_is_a_clear_error(tmp_path):
    key = "bert.encoder.layer.0.output.dense.mixed_pet_serial.down.weight"
    save_mask_file(tmp_path / "m.safetensors", {key: torch.ones(3, 48, dtype=torch.bool)})
    config = MixedPetConfig(lora_rank=4, weight_masks=str(tmp_path / "m.safetensors"), task_type="SEQ_CLS")
    with pytest.raises(ValueError, match=r"has a mask for '.*mixed_pet_serial.down.weight', a weight the adapter 'default' does not have"):
        get_peft_model(tiny_model("bert"), config)


def test_tampered_saved_mask_is_refused_on_load(tmp_path):
    plain = MixedPetConfig(lora_rank=4, task_type="SEQ_CLS")
    save_mask_file(tmp_path / "m.safetensors", random_masks(plain))
    model = get_peft_model(tiny_model("bert"), MixedPetConfig(**{**plain.to_dict(), "weight_masks": str(tmp_path / "m.safetensors")}))
    model.save_pretrained(tmp_path / "adapter")
    path = tmp_path / "adapter" / "adapter_model.safetensors"
    state = load_file(path)
    mask_name = next(k for k in state if k.endswith("A.weight_mask"))
    state[mask_name] = torch.ones(2, 2, dtype=torch.bool)
    save_file(state, path)
    with pytest.raises(ValueError, match=r"mask '.*A.weight_mask' has shape \(2, 2\), but the weight has shape \(4, 32\)"):
        PeftModel.from_pretrained(tiny_model("bert"), tmp_path / "adapter")


def test_mask_files_are_never_overwritten_and_must_be_bool(tmp_path):
    path = save_mask_file(tmp_path / "m.safetensors", {QUERY_A: torch.ones(4, 32, dtype=torch.bool)})
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="never overwritten"):
        save_mask_file(path, {QUERY_A: torch.zeros(4, 32, dtype=torch.bool)})
    assert path.read_bytes() == before
    save_file({QUERY_A: torch.ones(4, 32)}, tmp_path / "float.safetensors")
    with pytest.raises(ValueError, match="must be a bool tensor, got torch.float32"):
        count_trainable_parameters(MixedPetConfig(lora_rank=4, weight_masks=str(tmp_path / "float.safetensors")), BERT)
    with pytest.raises(ValueError, match="needs a flat prefix"):
        MixedPetConfig(prefix_length=2, prefix_projection_size=8, weight_masks=str(path))
