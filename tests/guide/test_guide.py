"""docs/writing-a-plugin.md works as written: its ```bash blocks, run in order by a newcomer.

The blocks run as one bash script (`set -euo pipefail`) in an empty folder, with a fresh
virtual environment's `bin` first on PATH and a wheel of this checkout installed in it
(tests/venvs.py). That covers the scaffold end to end: `dicesearch new-plugin`, a pip
install of the generated package, its generated tests under that environment's pytest,
then a spec and a sweep using the new block. ```console blocks are not run here: the
README's set-up, and the example's install, which tests/registry/test_third_party_plugins.py does.
"""

import re

import pytest
from venvs import ROOT

GUIDE = ROOT / "docs" / "writing-a-plugin.md"


def fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", GUIDE.read_text(), flags=re.M | re.S)


def test_the_guide_runs_the_steps_a_plugin_author_needs():
    script = "\n".join(fenced("bash"))
    for command in (
        "dicesearch new-plugin my_block",
        'python -m pip install -e "./dicesearch-my-block[test]"',
        "dicesearch plugins",
        "python -m pytest dicesearch-my-block",
        "dicesearch validate my-spec.yaml",
        "dicesearch sweep my-space.yaml",
    ):
        assert command in script, f"the guide no longer runs `{command}`"


@pytest.mark.slow
def test_the_guide_runs_as_written(fresh_venv, tmp_path):
    env = fresh_venv("guide")
    blocks = fenced("bash")
    script = "set -euo pipefail\n" + "\n".join(f"echo '>>> guide block {i + 1}'\n{block}" for i, block in enumerate(blocks))
    result = env.run("bash", "-c", script, cwd=tmp_path, timeout=600)
    out = result.stdout
    shown = next(block for block in fenced("text") if block.startswith("created dicesearch-my-block/"))
    for line in shown.splitlines():  # the guide shows new-plugin's output verbatim
        assert line in out, f"new-plugin's output no longer shows {line!r}"
    assert "  my_block  from dicesearch-my-block (dicesearch_my_block)" in out
    assert re.search(r"^=+ 3 passed in ", out, flags=re.M), "the generated package's tests did not all pass"
    assert "ok: my-block-cascade: 2 stage(s): my_block x2 @ 8x8, convnext x1 @ 16x16" in out
    assert len(re.findall(r"^trial \d: fid_8 [\d.]+ \(", out, flags=re.M)) == 2
    assert (tmp_path / "best.yaml").read_text().count("kind: my_block") >= 1
