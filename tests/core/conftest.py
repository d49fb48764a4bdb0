import numpy as np
import pytest

from napari_loopseg.core.crops import Sample
from napari_loopseg.core.normalize import normalize_plane
from napari_loopseg.core.synthetic import make_nuclei


@pytest.fixture
def training_sample():
    """Makes a small synthetic training sample (96 x 96, nuclei of radius 5-8) from a seed; with
    ``reviewed``, only its top half counts as reviewed."""

    def make(seed: int, reviewed: bool = False) -> Sample:
        image, labels = make_nuclei((96, 96), seed=seed, radius=(5, 8))
        mask = None
        if reviewed:
            mask = np.zeros(labels.shape, bool)
            mask[:48] = True
        return Sample(normalize_plane(image), labels.astype(np.int32), mask)

    return make
