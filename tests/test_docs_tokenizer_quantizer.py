"""The code snippets of docs/autoencoder.md and docs/quantizer.md run as written."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", ["autoencoder.md", "quantizer.md"])
def test_doc_snippets_run(name, capsys):
    text = (DOCS / name).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, f"no python snippets in {name}"
    # the snippets of one page build on each other, like a notebook
    exec(compile("\n".join(blocks), str(DOCS / name), "exec"), {"__name__": "__doc_snippets__"})
    printed = capsys.readouterr().out
    if name == "quantizer.md":
        assert "[17, 17, 17, 17] 83521 4.09" in printed and "0.0173 0.0442" in printed
        assert "\n1.7\n2.0\n" in printed  # best alpha: continuous (KS) view, then discrete (bin entropy) view
    else:
        assert "8 83521" in printed
