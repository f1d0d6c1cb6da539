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


def _bash_blocks(section: str) -> list[str]:
    """The ``bash`` code blocks of a README section (up to the next heading of its level or
    above)."""
    readme = (REPO / "README.md").read_text()
    level = len(section.split(" ")[0])
    end = rf"^#{{1,{level}}} "
    body = re.search(rf"^{re.escape(section)}\n(.*?)(?={end}|\Z)", readme, re.S | re.M)
    assert body, f"README has no {section!r} section"
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", body.group(1), re.S)]


def test_ci_installs_and_tests_as_the_readme_says():
    block = _bash_blocks("## Set up")[0].splitlines()
    assert len(block) == 2, "the README has exactly two set-up commands"
    install = re.search(r'pip install (-e "\.\[[^\]]*\]")', block[0]).group(1)
    ci = (REPO / ".ci" / "run").read_text()
    assert f"pip install -q {install}" in ci
    assert block[0].endswith("dnrt train image --act dnrt"), "command 1 runs the main job"
    tests = re.search(r"-m pytest( .*)$", block[1]).group(1)
    assert f"-m pytest{tests}" in ci, "CI runs the README's test command, options included"
    assert "torch-sparse" not in block[1], "the tests do not wait for the optional build"


def test_ci_runs_the_optional_sampling_step():
    (optional,) = _bash_blocks("### Optional: PyG neighbour sampling")
    build = re.fullmatch(r"(MAX_JOBS=\S+) \S*pip install (--no-build-isolation .*)", optional)
    assert build, "the optional step builds torch-scatter / torch-sparse"
    jobs, args = build.groups()
    ci = (REPO / ".ci" / "run").read_text()
    assert f"{jobs} pip install -q {args}" in ci
    assert "Optional: PyG neighbour sampling" in ci  # CI names the README step it runs
    assert ci.index(args) < ci.index("-m pytest -q"), "CI builds them before the tests"
