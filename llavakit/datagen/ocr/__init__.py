"""OCR for text-rich images: `engines` (adapters behind one interface, reading at LLaVAR's scale)
and `layout` (lines merged into paragraphs in reading order).

The engine names and reading defaults live here, importable without numpy or Pillow, so the
command line can offer them as choices; `engines.make_engine` builds exactly these.
"""

DEFAULT_SHORT_EDGE = 384
"""LLaVAR's OCR resolution: images are shrunk until their short edge is at most this."""
DEFAULT_MIN_CONFIDENCE = 0.7
"""Lines below this recogniser confidence are treated as noise by the pipelines."""
ENGINE_NAMES = ("rapidocr", "tesseract", "easyocr")
"""Engines `engines.make_engine` knows, in order of preference."""
