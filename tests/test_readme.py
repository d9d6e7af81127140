"""The README's usage example runs as written."""

import re
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """Every ```python block, dedented (blocks inside list items are indented)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return [textwrap.dedent(block) for block in blocks]


def test_readme_has_a_usage_example():
    assert python_blocks(), "README.md has no ```python block"


def test_readme_usage_example_runs(capsys):
    namespace: dict = {}
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("torch.Size([8, ")
    top = namespace["top_codes"](
        namespace["chefer"], namespace["batch"], namespace["model"].schema, 0, 3
    )
    assert len(top) == 3 and all(isinstance(code, str) for _, code, _ in top)
