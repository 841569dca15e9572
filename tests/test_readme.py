"""The README's usage example really runs."""

from __future__ import annotations

import re
from pathlib import Path

from peft_autoconfig.tuners.naming import parameter_block_type

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_usage_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    usage = text.split("## Usage", 1)[1]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "my-adapter" / "adapter_model.safetensors").exists()
    printed = int(capsys.readouterr().out.splitlines()[0])
    real = sum(p.numel() for n, p in namespace["model"].named_parameters() if parameter_block_type(n) is not None)
    assert printed == real > 0
