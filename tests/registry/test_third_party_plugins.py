"""A third party's block plugin, pip-installed into a fresh virtual environment and used.

The example package examples/dicesearch-gmlp is installed next to a wheel of this
checkout (tests/venvs.py: offline, nothing downloaded); then that environment's own
`dicesearch` lists the block, validates specs with it, runs a sweep that picks between
it and a built-in block, and the package's own tests pass with that environment's pytest.
"""

import optuna
import pytest
from optuna.trial import TrialState
from venvs import ROOT, copy_tree

pytestmark = pytest.mark.slow

SPEC = """\
name: gmlp-cascade
input: {channels: 1, resolution: 16, num_classes: 10}
stages:
  - {patch_size: 4, channels: 16, depth: 2, block: {kind: gmlp}}
  - {patch_size: 1, channels: 16, depth: 1, block: {kind: convnext, mlp_ratio: 2.0}}
"""

SPACE = """\
name: gmlp-vs-convnext
base: spec.yaml
parameters:
  stages[1].block.kind: {choice: [gmlp, convnext]}
budget: {train_steps: 10, batch_size: 8, fid_samples: 8, sampling_steps: 3, report_every: 5}
memory: {budget_gb: 24, precision: fp16, batch_size: 8}
trials: 2
seed: 2
"""


@pytest.fixture(scope="module")
def gmlp_env(fresh_venv, tmp_path_factory):
    env = fresh_venv("gmlp")
    package = copy_tree(ROOT / "examples" / "dicesearch-gmlp", tmp_path_factory.mktemp("pkg") / "dicesearch-gmlp")
    env.pip_install(str(package), cwd=package.parent)
    work = tmp_path_factory.mktemp("work")
    (work / "spec.yaml").write_text(SPEC)
    return env, package, work


def test_dicesearch_plugins_lists_the_block_and_its_distribution(gmlp_env):
    env, _, work = gmlp_env
    result = env.run("dicesearch", "plugins", cwd=work)
    assert "  gmlp  from dicesearch-gmlp (dicesearch_gmlp)" in result.stdout
    assert "max_tokens: int > 0 = 4096" in result.stdout
    assert "  convnext  from dicesearch (dicesearch_plugins.convnext)" in result.stdout
    assert "warning" not in result.stderr


def test_a_spec_with_the_block_validates_and_its_check_rejects_a_bad_stage(gmlp_env):
    env, _, work = gmlp_env
    ok = env.run("dicesearch", "validate", "spec.yaml", cwd=work)
    assert "ok: gmlp-cascade: 2 stage(s): gmlp x2 @ 4x4, convnext x1 @ 16x16" in ok.stdout
    (work / "too-fine.yaml").write_text(SPEC.replace("kind: convnext, mlp_ratio: 2.0", "kind: gmlp, max_tokens: 64"))
    bad = env.run("dicesearch", "validate", "too-fine.yaml", cwd=work, check=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        "error: too-fine.yaml:5: stages[1].block.max_tokens: the stage's 16x16 grid has 256 tokens, over the limit of 64"
    )
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_a_sweep_picks_between_the_block_and_a_builtin(gmlp_env):
    env, _, work = gmlp_env
    (work / "space.yaml").write_text(SPACE)
    env.run("dicesearch", "sweep", "space.yaml", cwd=work, timeout=400)
    study = optuna.load_study(study_name="gmlp-vs-convnext", storage=f"sqlite:///{work}/optuna.db")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [t.user_attrs.get("reason") for t in trials]
    for t in trials:
        assert t.user_attrs["spec_yaml"].count("kind: gmlp") >= 1 and t.value > 0
    chosen = {t.params["stages[1].block.kind"] for t in trials}
    # seed 2: trial n's sampler is seeded 2 + n, and those first random picks are one of each
    assert chosen == {"gmlp", "convnext"}, f"both trials chose {chosen}; pick a seed that samples both"


def test_the_example_package_passes_its_own_tests(gmlp_env):
    env, package, _ = gmlp_env
    result = env.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package)
    assert "5 passed" in result.stdout
