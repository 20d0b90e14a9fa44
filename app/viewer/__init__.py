"""The study viewer: radiograph display per the DICOM grayscale pipeline, with overlays.

* :mod:`~app.viewer.image_data`: decoding (off the GUI thread) into a :class:`LoadedImage`
  that keeps the Modality LUT output and the file's VOI settings;
* :mod:`~app.viewer.display`: the VOI / presentation stages as a ``uint8`` lookup table;
* :mod:`~app.viewer.overlay`: heatmap geometry through the model's letterbox, colouring;
* :mod:`~app.viewer.widget`: :class:`ImageViewer`;
* :mod:`~app.viewer.panels`: :class:`MetadataPanel`, :class:`ThumbnailStrip`;
* :mod:`~app.viewer.loader`: :class:`ImageLoader` (a ``QRunnable`` with signals).

See ``docs/viewer.md``.
"""

from app.viewer.display import DisplayState, FileVoiLut, default_state, presets, render, thumbnail
from app.viewer.image_data import (
    MAX_PIXELS,
    LoadedImage,
    PixelSpacing,
    ViewerError,
    Window,
    load_image,
)
from app.viewer.loader import ImageLoader, LoaderSignals
from app.viewer.overlay import cell_box, colorize, heatmap_box, heatmap_to_image
from app.viewer.panels import MetadataPanel, ThumbnailStrip
from app.viewer.widget import ImageViewer

__all__ = [
    "MAX_PIXELS",
    "DisplayState",
    "FileVoiLut",
    "ImageLoader",
    "ImageViewer",
    "LoadedImage",
    "LoaderSignals",
    "MetadataPanel",
    "PixelSpacing",
    "ThumbnailStrip",
    "ViewerError",
    "Window",
    "cell_box",
    "colorize",
    "default_state",
    "heatmap_box",
    "heatmap_to_image",
    "load_image",
    "presets",
    "render",
    "thumbnail",
]
