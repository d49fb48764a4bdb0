"""napari dock widgets: read layers, run core generators in workers, write layers on the GUI thread."""
