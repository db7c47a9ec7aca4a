"""Fresh virtual environments, for tests that install packages as a user would."""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).parents[1]


class FreshVenv:
    """A new virtual environment that borrows this one's installed packages.

    It has no pip of its own (``python -m pip`` runs this environment's pip, installing into
    the new one) and a ``.pth`` line appending this environment's site-packages to its
    ``sys.path``: torch and the other dependencies are found, not downloaded. Packages it
    installs itself come first on ``sys.path``, so its own dicesearch shadows this one's.
    Commands run with the venv's ``bin`` first on PATH and pip held offline
    (``PIP_NO_INDEX``, no build isolation: setuptools must be importable here).
    """

    def __init__(self, root: Path, scratch: Path):
        self.root = root
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(root)
        purelib = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        outer = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
        self.purelib = purelib
        Path(purelib, "_borrowed_site_packages.pth").write_text("".join(f"{p}\n" for p in outer))
        bindir = str(root / "bin")
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        self.env.update(
            PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            VIRTUAL_ENV=str(root),
            PIP_NO_INDEX="1",
            PIP_NO_BUILD_ISOLATION="0",  # sic: pip reads this variable as "build isolation: no"
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
            DICESEARCH_CACHE_DIR=str(scratch / "cache"),
            MPLBACKEND="Agg",
            COLUMNS="200",
        )

    def hide(self, *names: str) -> None:
        """Borrow every outer package except those whose folder or file names start with one of
        ``names`` (e.g. a distribution and its ``.dist-info``): as if they were never installed."""
        pth = Path(self.purelib, "_borrowed_site_packages.pth")
        farms = []
        for index, outer in enumerate(Path(line) for line in pth.read_text().splitlines() if line):
            farm = self.root.parent / f"borrowed-{index}"
            farm.mkdir()
            for entry in outer.iterdir():
                if not entry.name.startswith(names):
                    (farm / entry.name).symlink_to(entry)
            farms.append(farm)
        pth.write_text("".join(f"{farm}\n" for farm in farms))

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def run(self, *args: str, cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command of the venv (``dicesearch``, ``python`` ...); raise with its output if it fails."""
        result = subprocess.run(
            [str(a) for a in args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"`{' '.join(map(str, args))}` exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def pip_install(self, *args: str, cwd: Path) -> None:
        self.run(self.python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", *args, cwd=cwd)


def copy_tree(source: Path, target: Path) -> Path:
    """A copy without caches or build output, so a build never writes into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache")
    shutil.copytree(source, target, ignore=ignore)
    return target


def build_dicesearch_wheel(scratch: Path) -> Path:
    """A wheel of this checkout, built from a copy (the checkout stays clean)."""
    src = scratch / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("dicesearch", "plugins"):
        copy_tree(ROOT / name, src / name)
    out = scratch / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = out.glob("dicesearch-*.whl")
    return wheel
