"""The README's Python example runs as written, and its set-up commands match .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "dnrt_vit.pt").is_file()
    assert float(namespace["loss"].detach()) > 0


def test_ci_installs_and_tests_as_the_readme_says():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Set up.*?```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(block) == 2, "the README has exactly two set-up commands"
    install = re.search(r'pip install (-e "\.\[[^\]]*\]")', block[0]).group(1)
    ci = (REPO / ".ci" / "run").read_text()
    assert f"pip install -q {install}" in ci
    assert "-m pytest -q" in block[1] and "-m pytest -q" in ci
    build = r"(MAX_JOBS=\S+) \S*pip install (--no-build-isolation [^&]*?) &&"
    extensions = re.search(build, block[1])
    assert extensions, "the test command builds torch-scatter / torch-sparse first"
    jobs, args = extensions.groups()
    assert f"{jobs} pip install -q {args}" in ci
