"""What every figure of the report shares: the Agg backend, the size, atomic PNG writing."""

from __future__ import annotations

import gc

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a cluster node

import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import atomic_path  # noqa: E402

DPI = 110
# Metadata without a time stamp: the same inputs give the same bytes (a cluster run and a
# local run write identical figures).
PNG_METADATA = {"Software": None}


def save_png(figure, path):
    """Write ``figure`` to ``path`` as PNG (complete or not at all) and close it."""
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=DPI, metadata=PNG_METADATA, facecolor="white")
    finally:
        plt.close(figure)


def label_colorbar(display, label):
    """Put ``label`` (the quantity and its unit) on a nilearn display's colour bar."""
    axes = getattr(display, "_colorbar_ax", None)
    if axes is not None:
        axes.set_ylabel(label, fontsize=10, rotation=90, labelpad=4)
        axes.yaxis.set_label_position("left")


def skip_imported_objects_in_collections():
    """nilearn calls gc.collect() each time it reads an image's data (about 17 times per
    lesion figure); with every object of the imported libraries to scan, that took two
    thirds of a figure's time. Objects frozen here (those alive now) are left out of every
    later collection: lesion figures became 4 x faster."""
    gc.collect()
    gc.freeze()
