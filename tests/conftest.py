"""Shared test set-up: one torch thread per process on these small machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FEDKUBE_TORCH_THREADS", "1")
