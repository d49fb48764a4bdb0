"""The plugin as napari sees it: manifest valid, widget and samples reachable from the menus."""

import npe2

from napari_loopseg.widgets.segment_widget import SegmentWidget


def test_manifest_is_valid():
    manifest = npe2.PluginManifest.from_distribution("napari-loopseg")
    assert manifest.display_name == "LoopSeg"
    assert {w.display_name for w in manifest.contributions.widgets} == {"Segment", "Fine-tune"}


def test_samples_open_with_ground_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-loopseg", "nuclei")
    image, truth = layers
    assert image.data.shape == (512, 512) and image.data.dtype.name == "uint16"
    assert truth.data.shape == (512, 512) and truth.data.max() > 100


def test_segment_widget_docks_from_the_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-loopseg", "Segment")
    assert isinstance(widget, SegmentWidget)


def test_plugin_modules_do_not_import_torch():
    """napari imports plugin widgets on the GUI thread: torch (seconds to import) must wait."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import napari_loopseg.widgets.finetune_widget, napari_loopseg.widgets.segment_widget\n"
        "import napari_loopseg.sample_data\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_opening_the_widgets_imports_no_torch():
    """Opening a widget runs on the GUI thread: listing models must read their cards without
    torch. (The widgets then import torch in a background thread: switched off here.)"""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import napari\n"
        "from napari_loopseg.widgets import segment_jobs\n"
        "segment_jobs.warm_up = lambda: None\n"
        "viewer = napari.Viewer(show=False)\n"
        "for name in ('Segment', 'Fine-tune'):\n"
        "    viewer.window.add_plugin_dock_widget('napari-loopseg', name)\n"
        "assert len(viewer.window.dock_widgets) == 2, 'widgets not opened'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "viewer.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
