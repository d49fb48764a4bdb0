"""The package as users get it: built from the sdist, installed into a fresh environment, it carries
the manifest, the samples and the bundled model as real files (no symlinks, which Windows
checkouts break) and napari finds the plugin."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDED = [
    "napari_loopseg/napari.yaml",
    "napari_loopseg/samples/nuclei.tif",
    "napari_loopseg/samples/nuclei_large_labels.tif",
    "napari_loopseg/models/nuclei.safetensors",
    "napari_loopseg/models/nuclei.json",
]


def test_no_symlinks_in_the_repository():
    tracked = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=False)
    if tracked.returncode:
        pytest.skip("not a git checkout")
    links = [line.split("\t")[1] for line in tracked.stdout.splitlines() if line.startswith("120000")]
    assert links == []


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    # no flags: the sdist first, then the wheel built from that sdist (what pip does from PyPI)
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True, capture_output=True
    )
    return out


def test_wheel_from_the_sdist_carries_real_files(built):
    (wheel,) = built.glob("*.whl")
    (sdist,) = built.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert all(name in names for name in NEEDED), sorted(set(NEEDED) - names)
        links = [i.filename for i in archive.infolist() if (i.external_attr >> 16) & 0o170000 == 0o120000]
        assert links == []
    with tarfile.open(sdist) as archive:
        assert not [m.name for m in archive.getmembers() if m.issym()]
    import napari_loopseg

    assert f"-{napari_loopseg.__version__}-" in wheel.name  # one version, from the package


def test_installed_wheel_is_a_working_plugin(built, tmp_path):
    (wheel,) = built.glob("*.whl")
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    # a fresh environment with this wheel installed, borrowing the test environment's dependencies
    # (listed after its own site-packages, so the wheel's copy of napari_loopseg comes first)
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    borrowed = sysconfig.get_paths()["purelib"]
    Path(own, "borrowed_dependencies.pth").write_text(borrowed + "\n")
    code = (
        "import npe2, napari_loopseg, pathlib\n"
        "assert 'site-packages' in napari_loopseg.__file__, napari_loopseg.__file__\n"
        "m = npe2.PluginManifest.from_distribution('napari-loopseg')\n"
        "assert {w.display_name for w in m.contributions.widgets} == {'Segment', 'Fine-tune'}\n"
        "from napari_loopseg.sample_data import nuclei\n"
        "image, truth = nuclei()\n"
        "assert image[0].shape == (512, 512) and truth[0].max() > 100\n"
        "from napari_loopseg.core.registry import load_model\n"
        "assert load_model('nuclei').name == 'nuclei'\n"
    )
    subprocess.run([python, "-c", code], check=True, cwd=tmp_path)
