"""Hub integration against a local fake Hub (tests/hub_server.py) driven by the real huggingface_hub client."""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import pytest
from conftest import tiny_configs
from huggingface_hub import HfApi, ModelCard, constants
from hub_server import LocalHub
from peft import PeftConfig, get_peft_model

import peft_autoconfig
from peft_autoconfig import MixedPetConfig, UniPELTConfig, count_trainable_parameters
from peft_autoconfig.front import FORMAT_VERSION, Front
from peft_autoconfig.hub import (
    AutoSearchedConfig,
    HubAuthError,
    HubConfigError,
    HubConnectionError,
    HubError,
    HubNotFoundError,
    push_to_hub,
)

TOKEN = "hf_test_token"
REPO = "org/tiny-bert-synthetic-autopeft"
BASE_MODEL = "hf-internal-testing/tiny-random-BertModel"
POINT_SPECS = {  # name -> (config, made-up but consistent accuracy: more parameters, better)
    "p00": (MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size=2, layers_to_transform=[2]), 0.71),
    "p01": (MixedPetConfig(task_type="SEQ_CLS", lora_rank=4, target_modules=["query", "value"]), 0.78),
    "p02": (UniPELTConfig(task_type="SEQ_CLS", adapter_reduction_factor=4), 0.83),
}


def tiny_png() -> bytes:
    """A valid 2x2 grey PNG (stands in for the search's pareto.png)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x80\x80" for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def search_output(tmp_path) -> Path:
    """A search output folder per the contract: front.json, front/<name>/ (save_pretrained), pareto.png, journal."""
    out = tmp_path / "search-out"
    model_config = tiny_configs()["bert"]
    points = []
    for trial, (name, (config, accuracy)) in enumerate(POINT_SPECS.items()):
        config.save_pretrained(out / "front" / name)
        params = count_trainable_parameters(config, model_config)
        points.append({
            "name": name, "trial_id": trial, "metric": accuracy, "trainable_parameters": params,
            "objectives": {"accuracy": accuracy, "trainable_parameters": params},
            "fidelity": {"train_subset": 256, "max_steps": 20, "num_epochs": None}, "config_path": f"front/{name}",
        })
    front = {
        "format_version": 1, "model": BASE_MODEL, "task": "rotten_tomatoes", "metric": "accuracy",
        "objectives": [{"name": "accuracy", "direction": "max"}, {"name": "trainable_parameters", "direction": "min"}],
        "reference_point": [0.0, 100000.0], "hypervolume": 42.5,
        "search": {"algorithm": "nsga2", "n_trials": 12, "seed": 0, "wall_time_s": 754.2, "cost_full_runs": 1.75,
                   "cost_lora_r8_runs": 3.55,
                   "fidelity_agreement": [{"levels": [0, 1], "n": 6, "kendall_tau": 0.2, "p_value": 0.719}],
                   "recipe": {"population": 4}},
        "points": points,
        "baselines": [{"name": "lora_r8", "metric": 0.77, "trainable_parameters": 3072}],
    }
    (out / "front.json").write_text(json.dumps(front, indent=2))
    (out / "pareto.png").write_bytes(tiny_png())
    (out / "journal.jsonl").write_text('{"trial_id": 0}\n')
    return out


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets HF_HUB_OFFLINE=1 for everything else
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the local Hub speaks Git LFS, not Xet
    with LocalHub(token=TOKEN, max_seconds=120) as server:
        yield server


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hf-cache"


def dead_endpoint() -> str:
    with LocalHub() as server:
        endpoint = server.endpoint
    return endpoint  # the port is closed now: connection refused


def cached_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts] if cache.exists() else []


def expected_files(out: Path) -> set[str]:
    return {"README.md", "front.json", "pareto.png"} | {f"front/{n}/adapter_config.json" for n in POINT_SPECS}


# -- push + pull round trip -------------------------------------------------------------------------------------
def test_push_front_one_commit_then_pull_every_point(search_output, hub, cache, make_tiny_model):
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(REPO)
    before = api.list_repo_commits(REPO)

    result = push_to_hub(search_output, REPO, token=TOKEN, endpoint=hub.endpoint)

    after = api.list_repo_commits(REPO)
    assert len(after) == len(before) + 1
    assert after[0].commit_id == result.commit_oid and result.commit_url.endswith(f"{REPO}/commit/{result.commit_oid}")
    assert set(api.list_repo_files(REPO)) - {".gitattributes"} == expected_files(search_output) == set(result.files)
    assert sum(1 for method, path in hub.requests if path.startswith(f"/api/models/{REPO}/commit/")) == 1

    for name, (config, _) in POINT_SPECS.items():
        pulled = AutoSearchedConfig.from_pretrained(REPO, subfolder=f"front/{name}", endpoint=hub.endpoint,
                                                    cache_dir=cache)
        local = PeftConfig.from_pretrained(str(search_output / "front" / name))
        assert type(pulled) is type(local) is type(config)
        assert pulled.to_dict() == local.to_dict()

    default = AutoSearchedConfig.from_pretrained(REPO, endpoint=hub.endpoint, cache_dir=cache)
    assert isinstance(default, UniPELTConfig)  # p02 has the best accuracy

    # the pulled config builds with plain peft and matches the local folder's model exactly
    budget = json.loads((search_output / "front.json").read_text())["points"][1]["trainable_parameters"]  # p01's
    pulled = AutoSearchedConfig.from_pretrained(REPO, select="best_under_budget", max_parameters=budget,
                                                endpoint=hub.endpoint, cache_dir=cache)
    assert pulled.to_dict() == PeftConfig.from_pretrained(str(search_output / "front" / "p01")).to_dict()
    from_hub = get_peft_model(make_tiny_model("bert"), pulled)
    from_folder = get_peft_model(make_tiny_model("bert"), PeftConfig.from_pretrained(str(search_output / "front/p01")))
    shapes = lambda m: {k: tuple(p.shape) for k, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert shapes(from_hub) == shapes(from_folder) and any("lora" in k for k in shapes(from_hub))
    assert from_hub.get_nb_trainable_parameters() == from_folder.get_nb_trainable_parameters()

    # a second push of the same folder is again exactly one commit
    push_to_hub(search_output, REPO, token=TOKEN, endpoint=hub.endpoint, commit_message="again")
    assert [c.title for c in api.list_repo_commits(REPO)][:2] == ["again", after[0].title]


def test_pulled_config_works_offline_once_cached(search_output, hub, cache, monkeypatch):
    push_to_hub(search_output, REPO, token=TOKEN, endpoint=hub.endpoint)
    online = AutoSearchedConfig.from_pretrained(REPO, select="fewest_parameters", endpoint=hub.endpoint,
                                                cache_dir=cache)
    endpoint = hub.endpoint
    hub.stop()  # the Hub is gone: the cache alone answers
    unreachable = AutoSearchedConfig.from_pretrained(REPO, select="fewest_parameters", endpoint=endpoint,
                                                     cache_dir=cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = AutoSearchedConfig.from_pretrained(REPO, select="fewest_parameters", endpoint=endpoint,
                                                 cache_dir=cache)
    assert online.to_dict() == unreachable.to_dict() == offline.to_dict()
    assert online.serial_adapter_size == 2  # p00, the smallest
    with pytest.raises(HubConnectionError, match="not in the local cache"):  # never downloaded: a clear error
        AutoSearchedConfig.from_pretrained(REPO, subfolder="front/p01", endpoint=endpoint, cache_dir=cache)


def test_push_to_a_branch(search_output, hub, cache):
    push_to_hub(search_output / "front" / "p00", REPO, token=TOKEN, endpoint=hub.endpoint)
    push_to_hub(search_output, REPO, token=TOKEN, endpoint=hub.endpoint, revision="v2")
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    assert "front.json" in api.list_repo_files(REPO, revision="v2")
    assert "front.json" not in api.list_repo_files(REPO)
    on_branch = AutoSearchedConfig.from_pretrained(REPO, revision="v2", endpoint=hub.endpoint, cache_dir=cache)
    on_main = AutoSearchedConfig.from_pretrained(REPO, endpoint=hub.endpoint, cache_dir=cache)
    assert isinstance(on_branch, UniPELTConfig) and on_main.serial_adapter_size == 2


def test_single_config_folder_keeps_its_measured_point(search_output, hub, cache):
    result = push_to_hub(search_output / "front" / "p01", REPO, token=TOKEN, endpoint=hub.endpoint)
    assert set(result.files) == {"README.md", "adapter_config.json"}
    pulled = AutoSearchedConfig.from_pretrained(REPO, endpoint=hub.endpoint, cache_dir=cache)
    assert pulled.to_dict() == PeftConfig.from_pretrained(str(search_output / "front" / "p01")).to_dict()
    readme = Path(HfApi(endpoint=hub.endpoint).hf_hub_download(REPO, "README.md", cache_dir=str(cache)))
    card = ModelCard.load(readme)
    assert [r.metric_value for r in card.data.eval_results] == [0.78]
    with pytest.raises(HubConfigError, match="single adapter_config.json"):
        AutoSearchedConfig.from_pretrained(REPO, select="fewest_parameters", endpoint=hub.endpoint, cache_dir=cache)


# -- model card ---------------------------------------------------------------------------------------------------
def test_card_metadata_parses_back_with_the_measured_results(search_output, tmp_path):
    result = push_to_hub(search_output, REPO, dry_run=tmp_path / "dry", endpoint=dead_endpoint())
    card = ModelCard.load(Path(result.dry_run_dir) / "README.md")
    data = card.data
    assert data.library_name == "peft" and data.base_model == BASE_MODEL
    assert {"peft", "mixed_pet", "unipelt", "peft_autoconfig", "autopeft"} <= set(data.tags)
    assert data.datasets == ["rotten_tomatoes"] and data.metrics == ["accuracy"]
    assert data.pipeline_tag == "text-classification"
    front = json.loads((search_output / "front.json").read_text())
    by_value = {r.metric_value: r for r in data.eval_results}
    assert sorted(by_value) == sorted(p["metric"] for p in front["points"])
    assert all(r.metric_type == "accuracy" and r.dataset_type == "rotten_tomatoes" for r in data.eval_results)
    for point in front["points"]:
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {point['name']}"))
        assert f"{point['metric']:.4f}" in row and f"{point['trainable_parameters']:,}" in row
        assert point["config_path"] in row
    assert "(**default**)" in next(line for line in card.text.splitlines() if line.startswith("| p02"))
    assert "![Pareto front" in card.text and "(pareto.png)" in card.text
    assert "| cost in full training runs | 1.75 |" in card.text and "| wall time | 12m 34s |" in card.text
    assert "| cost in final-budget LoRA r=8 runs | 3.55 |" in card.text
    assert ("| low fidelity vs the next level (the search's promoted points) | level 0 -> 1: Kendall tau 0.20 "
            "(p = 0.72) over 6 promoted points |") in card.text
    assert f'AutoSearchedConfig.from_pretrained("{REPO}"' in card.text and "get_peft_model" in card.text
    for key in ("zhou2024autopeft", "mao2022unipelt", "@misc{peft"):
        assert key in card.text
    assert "| lora_r8 | 0.7700 | 3,072 |" in card.text


def test_local_model_path_is_not_written_as_base_model(search_output, tmp_path):
    front = json.loads((search_output / "front.json").read_text())
    front["model"] = str(tmp_path)  # a local folder, as when searching an offline model
    (search_output / "front.json").write_text(json.dumps(front))
    card = ModelCard.load(Path(push_to_hub(search_output, REPO, dry_run=tmp_path / "a").dry_run_dir) / "README.md")
    assert card.data.base_model is None and "(a local model)" in card.text
    card = ModelCard.load(Path(push_to_hub(search_output, REPO, dry_run=tmp_path / "b",
                                           base_model="sentence-transformers/all-MiniLM-L6-v2").dry_run_dir) / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"


def test_the_card_template_has_one_location_inside_the_package():
    import tomllib
    from importlib import resources

    import peft_autoconfig.hub.card as card

    root = Path(__file__).parents[1]
    packaged = resources.files("peft_autoconfig") / "hub_cards" / "searched_config.md"
    assert packaged.is_file() and not Path(str(packaged)).is_symlink()
    assert not Path(str(packaged)).parent.is_symlink()
    assert card.template_path() == Path(str(packaged)) and "{{ card_data }}" in card.template_path().read_text()
    assert not (root / "hub_cards" / "searched_config.md").exists()  # the root folder only points to it
    assert "peft_autoconfig/hub_cards/searched_config.md" in (root / "hub_cards" / "README.md").read_text()
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "hub_cards/*.md" in package_data["peft_autoconfig"]  # so an installed wheel has it


# -- dry run ------------------------------------------------------------------------------------------------------
def test_dry_run_writes_exactly_the_commit_without_network(search_output, hub, tmp_path):
    dry = push_to_hub(search_output, REPO, dry_run=tmp_path / "dry", endpoint=dead_endpoint())
    written = {p.relative_to(dry.dry_run_dir).as_posix() for p in Path(dry.dry_run_dir).rglob("*") if p.is_file()}
    assert written == set(dry.files) == expected_files(search_output)  # no journal, no .gitattributes
    pushed = push_to_hub(search_output, REPO, token=TOKEN, endpoint=hub.endpoint)
    api = HfApi(endpoint=hub.endpoint)
    for path in pushed.files:
        remote = Path(api.hf_hub_download(REPO, path, cache_dir=str(tmp_path / "c"))).read_bytes()
        assert remote == (Path(dry.dry_run_dir) / path).read_bytes(), path
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".dry")] == []


def test_local_only_keys_of_front_json_are_not_published(search_output, tmp_path):
    front = json.loads((search_output / "front.json").read_text())
    (search_output / "front.json").write_text(json.dumps(dict(front, model_path="/home/me/models/bert")))
    dry = Path(push_to_hub(search_output, REPO, dry_run=tmp_path / "dry").dry_run_dir)
    published = json.loads((dry / "front.json").read_text())
    assert "model_path" not in published and published["format_version"] == FORMAT_VERSION  # written by the writer
    assert Front.from_dict(published) == Front.from_dict(front)  # everything else unchanged (format 1 converted)


def test_no_local_path_in_any_uploaded_file(tmp_path, tiny_bert_dir, synthetic_task_dir, hub, tmp_path_factory):
    """A search on local folders (model, task) puts their paths in front.json, the configs and the recipe: none of
    them may reach the Hub, in any file, and the card still says the model is local."""
    from test_search_fakes import write_recipe

    from peft_autoconfig.search import load_recipe, run_search

    recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
                                      algorithm={"name": "nsga2", "n_trials": 4, "pop_size": 2}))
    out = tmp_path / "out"
    run_search(recipe, out, progress=False)
    base = str(tmp_path_factory.getbasetemp())
    assert base.encode() in (out / "front.json").read_bytes()  # the raw output does hold local paths
    result = push_to_hub(out, REPO, token=TOKEN, endpoint=hub.endpoint)
    uploaded = hub.repos[REPO].head("main").files
    assert set(result.files) <= set(uploaded)
    leaks = {path for path, content in uploaded.items() if base.encode() in content or b"/tmp/" in content}
    assert leaks == set()
    published = Front.from_dict(json.loads(uploaded["front.json"]))
    assert published.model_path is None and published.model == f"<local>/{Path(tiny_bert_dir).name}"
    assert "(a local model)" in uploaded["README.md"].decode()


def test_dry_run_refuses_a_non_empty_folder_and_cleans_up_on_failure(search_output, tmp_path, monkeypatch):
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        push_to_hub(search_output, REPO, dry_run=target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]

    calls = {"n": 0}
    original = Path.write_bytes

    def failing_write(self, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        push_to_hub(search_output, REPO, dry_run=tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied", "search-out"]  # no half-written folder


# -- failures and large files -----------------------------------------------------------------------------------
def test_a_failed_commit_leaves_no_repo_behind(search_output, hub):
    hub.fail_commits = 1
    with pytest.raises(HubError, match=f"{REPO}: cannot push: .* answered 422 .*commit refused"):
        push_to_hub(search_output, REPO, token=TOKEN, endpoint=hub.endpoint)
    assert REPO not in hub.repos  # created for the push, deleted when the commit failed
    assert ("DELETE", "/api/repos/delete") in hub.requests

    push_to_hub(search_output / "front" / "p00", REPO, token=TOKEN, endpoint=hub.endpoint)  # an existing repo...
    before = [c.oid for c in hub.repos[REPO].branches["main"]]
    hub.fail_commits = 1
    with pytest.raises(HubError, match="422"):
        push_to_hub(search_output, REPO, token=TOKEN, endpoint=hub.endpoint)
    assert [c.oid for c in hub.repos[REPO].branches["main"]] == before  # ...is kept, unchanged


def test_large_files_go_through_the_lfs_batch_api_intact(search_output, hub, tmp_path, make_tiny_model):
    """Adapter weights (safetensors: LFS by .gitattributes, preupload answers "lfs") and a file over the LFS size
    threshold travel through the LFS batch API, the upload URL and verify, and arrive byte for byte in one commit."""
    model = get_peft_model(make_tiny_model("bert"), POINT_SPECS["p01"][0])
    model.save_pretrained(tmp_path / "adapter")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (search_output / "front" / "p01" / name).write_bytes((tmp_path / "adapter" / name).read_bytes())
    plot = tiny_png() + bytes(range(256)) * 256  # a 64 KiB plot: over the threshold below, unlike every JSON file
    (search_output / "pareto.png").write_bytes(plot)
    hub.lfs_threshold = 32 * 1024
    result = push_to_hub(search_output, REPO, token=TOKEN, endpoint=hub.endpoint)

    weights = (search_output / "front/p01/adapter_model.safetensors").read_bytes()
    lfs_posts = [path for method, path in hub.requests if path.endswith(".git/info/lfs/objects/batch")]
    puts = [path for method, path in hub.requests if method == "PUT"]
    assert len(lfs_posts) == 1 and len(puts) == 2 and sorted(hub.lfs_objects.values()) == sorted([weights, plot])
    assert sum(1 for method, path in hub.requests if "/lfs-verify/" in path) == 2
    assert "front/p01/adapter_model.safetensors" in result.files
    api = HfApi(endpoint=hub.endpoint)
    downloaded = Path(api.hf_hub_download(REPO, "front/p01/adapter_model.safetensors", cache_dir=str(tmp_path / "c")))
    assert downloaded.read_bytes() == weights
    assert len(api.list_repo_commits(REPO)) == 2  # the repo's initial commit + exactly one push commit


# -- choosing a point ---------------------------------------------------------------------------------------------
def test_select_rules_on_a_local_search_output(search_output):
    load = lambda **kw: AutoSearchedConfig.from_pretrained(search_output, **kw)  # noqa: E731
    front = AutoSearchedConfig.load_front(search_output)
    params = {p.name: p.trainable_parameters for p in front.points}
    assert params["p00"] < params["p01"] < params["p02"]
    assert isinstance(load(), UniPELTConfig) and isinstance(load(select="best_metric"), UniPELTConfig)
    assert load(select="fewest_parameters").serial_adapter_size == 2
    assert load(max_parameters=params["p01"]).lora_rank == 4
    assert load(select="best_under_budget", max_parameters=params["p02"] - 1).lora_rank == 4
    assert load(select="fewest_parameters", max_parameters=params["p02"]).serial_adapter_size == 2
    assert load(subfolder="front/p01").lora_rank == 4
    with pytest.raises(HubConfigError, match=f"no point of the front has at most 1 trainable.*'p00' with {params['p00']:,}"):
        load(max_parameters=1)
    with pytest.raises(ValueError, match="`select` must be one of .*'best_metric'.*got 'smallest'"):
        load(select="smallest")
    with pytest.raises(ValueError, match="needs `max_parameters`"):
        load(select="best_under_budget")
    with pytest.raises(ValueError, match="either `subfolder`"):
        load(subfolder="front/p00", select="fewest_parameters")
    with pytest.raises(HubConfigError, match="`subfolder` must be a relative path"):
        load(subfolder="../elsewhere")


# -- errors -------------------------------------------------------------------------------------------------------
def test_401_from_the_server_is_a_clear_error_with_nothing_left_behind(search_output, hub, cache, tmp_path):
    with pytest.raises(HubAuthError) as error:
        push_to_hub(search_output, REPO, token="hf_wrong", endpoint=hub.endpoint)
    message = str(error.value)
    assert message.startswith(f"{REPO}: cannot push") and "401" in message and "Invalid credentials" in message
    assert hub.endpoint in message and "token" in message
    assert hub.repos == {}  # nothing created

    hub.add_repo("org/private", {"adapter_config.json": (search_output / "front/p01/adapter_config.json").read_bytes()},
                 private=True)
    with pytest.raises(HubAuthError, match="org/private: cannot list the repo files: .* answered 401"):
        AutoSearchedConfig.from_pretrained("org/private", token="hf_wrong", endpoint=hub.endpoint, cache_dir=cache)
    with pytest.raises(HubNotFoundError, match="org/private: .*repository not found .*private"):
        AutoSearchedConfig.from_pretrained("org/private", endpoint=hub.endpoint, cache_dir=cache)
    assert cached_files(cache) == []
    pulled = AutoSearchedConfig.from_pretrained("org/private", token=TOKEN, endpoint=hub.endpoint, cache_dir=cache)
    assert pulled.lora_rank == 4


def test_unreachable_server_is_a_clear_error_with_nothing_left_behind(search_output, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    endpoint = dead_endpoint()
    started = time.monotonic()
    with pytest.raises(HubConnectionError, match=f"{REPO}: cannot push: the Hub at {endpoint} is unreachable"):
        push_to_hub(search_output, REPO, token=TOKEN, endpoint=endpoint)
    with pytest.raises(HubConnectionError, match=f"{REPO}: the Hub cannot be reached and neither front.json nor"):
        AutoSearchedConfig.from_pretrained(REPO, endpoint=endpoint, cache_dir=cache)
    assert time.monotonic() - started < 10  # no long retry loops
    assert cached_files(cache) == []


def test_repo_without_a_config(hub, cache):
    hub.add_repo("org/weights-only", {"README.md": b"# hi\n", "model.safetensors": b"\0" * 16, "config.json": b"{}"})
    with pytest.raises(HubConfigError, match=r"org/weights-only: no front.json or adapter_config.json found; the repo "
                                             r"has \['.gitattributes', 'README.md', 'config.json', 'model.safetensors'\]"):
        AutoSearchedConfig.from_pretrained("org/weights-only", endpoint=hub.endpoint, cache_dir=cache)
    assert cached_files(cache) == []
    with pytest.raises(HubConfigError, match="front/p09/adapter_config.json not found"):
        AutoSearchedConfig.from_pretrained("org/weights-only", subfolder="front/p09", endpoint=hub.endpoint,
                                           cache_dir=cache)
    assert cached_files(cache) == []


def test_unknown_peft_type_names_repo_field_and_cure(hub, cache):
    hub.add_repo("org/foo", {"adapter_config.json": json.dumps({"peft_type": "FOO", "task_type": "SEQ_CLS"}).encode()})
    with pytest.raises(HubConfigError) as error:
        AutoSearchedConfig.from_pretrained("org/foo", endpoint=hub.endpoint, cache_dir=cache)
    message = str(error.value)
    assert message.startswith("org/foo: adapter_config.json field `peft_type` = 'FOO' is not a known PEFT type; known: [")
    assert "'MIXED_PET'" in message and "'LORA'" in message and message.endswith("did you `import peft_autoconfig`?")
    assert not [p for p in cache.rglob("*.incomplete")]


def test_malformed_files_name_the_field(search_output, hub, cache):
    good = json.loads((search_output / "front/p01/adapter_config.json").read_text())
    bad_value = dict(good, lora_dropout=2.0)
    hub.add_repo("org/bad-value", {"adapter_config.json": json.dumps(bad_value).encode()})
    with pytest.raises(HubConfigError, match=r"org/bad-value: adapter_config.json: invalid MixedPetConfig: "
                                             r"`lora_dropout` must be in \[0, 1\), got 2.0"):
        AutoSearchedConfig.from_pretrained("org/bad-value", endpoint=hub.endpoint, cache_dir=cache)
    hub.add_repo("org/not-json", {"adapter_config.json": b"{'peft_type': 'LORA'"})
    with pytest.raises(HubConfigError, match="org/not-json: adapter_config.json: not valid JSON .* line 1"):
        AutoSearchedConfig.from_pretrained("org/not-json", endpoint=hub.endpoint, cache_dir=cache)
    front = json.loads((search_output / "front.json").read_text())
    front["points"][1]["config_path"] = "../../outside"
    hub.add_repo("org/escape", {"front.json": json.dumps(front).encode()})
    with pytest.raises(HubConfigError, match=r"org/escape: front.json points\[1\]: field `config_path` must be a "
                                             r"relative path inside the repo"):
        AutoSearchedConfig.from_pretrained("org/escape", endpoint=hub.endpoint, cache_dir=cache)
    front = json.loads((search_output / "front.json").read_text())
    front["format_version"] = 7
    hub.add_repo("org/future", {"front.json": json.dumps(front).encode()})
    with pytest.raises(HubConfigError, match="field `format_version` = 7 is not supported"):
        AutoSearchedConfig.from_pretrained("org/future", endpoint=hub.endpoint, cache_dir=cache)


def test_only_json_is_downloaded(search_output, hub, cache):
    files = {p.relative_to(search_output).as_posix(): p.read_bytes() for p in search_output.rglob("*.json")}
    files.update({"front/p01/adapter_model.bin": b"pickle!", "front/p01/modeling.py": b"import os\n"})
    hub.add_repo("org/mixed", files)
    AutoSearchedConfig.from_pretrained("org/mixed", subfolder="front/p01", endpoint=hub.endpoint, cache_dir=cache)
    AutoSearchedConfig.from_pretrained("org/mixed", endpoint=hub.endpoint, cache_dir=cache)
    downloaded = {p.name for p in cached_files(cache) if "snapshots" in p.parts}
    assert downloaded == {"front.json", "adapter_config.json"}


def test_push_checks_the_folder_before_any_network_call(search_output):
    config_file = search_output / "front/p01/adapter_config.json"
    config_file.write_text(json.dumps(dict(json.loads(config_file.read_text()), peft_type="FOO")))
    with pytest.raises(HubConfigError, match="point 'p01'/adapter_config.json field `peft_type` = 'FOO'"):
        push_to_hub(search_output, REPO, token=TOKEN, endpoint=dead_endpoint())  # a config error, not a network one
    with pytest.raises(ValueError, match="`repo_id` must look like 'org/name'"):
        push_to_hub(search_output, "no-namespace")


# -- CLI ----------------------------------------------------------------------------------------------------------
def test_cli_push_and_dry_run(search_output, hub, tmp_path, capsys):
    from peft_autoconfig.cli import main

    assert main(["push", str(search_output), "--repo-id", REPO, "--dry-run", str(tmp_path / "dry")]) == 0
    assert "dry run: wrote 6 files" in capsys.readouterr().out
    assert (tmp_path / "dry" / "README.md").is_file()
    assert main(["push", str(search_output), "--repo-id", REPO, "--endpoint", hub.endpoint, "--token", TOKEN,
                 "--private"]) == 0
    out = capsys.readouterr().out
    assert f"pushed 6 files to {REPO} in one commit: {hub.endpoint}/{REPO}/commit/" in out
    assert hub.repos[REPO].private
    assert main(["push", str(search_output), "--repo-id", REPO, "--endpoint", hub.endpoint, "--token", "bad"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"peft-autoconfig push: error: {REPO}: cannot push") and "401" in err[0]


def test_auto_searched_config_is_exported():
    assert peft_autoconfig.AutoSearchedConfig is peft_autoconfig.hub.AutoSearchedConfig is AutoSearchedConfig
    assert "AutoSearchedConfig" in peft_autoconfig.__all__
    with pytest.raises(OSError, match="from_pretrained"):
        AutoSearchedConfig()


# -- with the search's own output ---------------------------------------------------------------------------------
def test_push_what_the_search_writes(tmp_path, tiny_bert_dir, synthetic_task_dir, hub, cache, make_tiny_model):
    """A real `run_search` output (cheap deterministic evaluator) pushes, renders and loads back unchanged."""
    from test_search_fakes import write_recipe

    from peft_autoconfig.search import load_recipe, run_search

    recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir,
                                      evaluator="test_search_fakes:fake_evaluate",
                                      algorithm={"name": "nsga2", "n_trials": 6, "pop_size": 3}))
    out = tmp_path / "out"
    document = run_search(recipe, out, progress=False).document
    result = push_to_hub(out, REPO, token=TOKEN, endpoint=hub.endpoint)
    names = {p["name"] for p in document["points"]}
    assert {f for f in result.files if f.endswith("adapter_config.json")} == {f"front/{n}/adapter_config.json" for n in names}
    assert "journal.jsonl" not in result.files and "pareto.png" in result.files

    readme = HfApi(endpoint=hub.endpoint).hf_hub_download(REPO, "README.md", cache_dir=str(tmp_path / "readme"))
    card = ModelCard.load(readme)
    assert sorted(r.metric_value for r in card.data.eval_results) == sorted(p["metric"] for p in document["points"])
    assert card.data.base_model is None  # the search ran on a local folder

    best = max(document["points"], key=lambda p: (p["metric"], -p["trainable_parameters"]))
    pulled = AutoSearchedConfig.from_pretrained(REPO, endpoint=hub.endpoint, cache_dir=cache)
    local = PeftConfig.from_pretrained(str(out / best["config_path"])).to_dict()
    assert pulled.to_dict() == dict(local, base_model_name_or_path=f"<local>/{Path(tiny_bert_dir).name}")
    model = get_peft_model(make_tiny_model("bert"), pulled)
    assert model.get_nb_trainable_parameters()[0] > 0
