"""napari dock widgets: read layers, run core generators in workers, write layers on the GUI thread.

Compute threads share the CPU with napari's GUI thread here. OpenMP's default lets idle compute
threads spin-wait for the next parallel region, holding cores the GUI needs; passive waiting
(set before torch starts its thread pool, and only if the user has not chosen) shortened the
longest GUI stalls while segmenting and fine-tuning (benchmarks/gui_responsiveness.py).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
