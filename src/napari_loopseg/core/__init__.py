"""Pure compute (numpy, torch, scikit-image): no napari, no Qt, runs on a bare GPU machine."""
