"""LLaVAR's pipeline for text-rich images, one module per step.

`items` (which images, shards and journals every step shares), `ocr` (OCR over many images in
worker processes), `clip` (image features for the filter and clusters), `filter` (keep the
text-rich images), `cluster` (group them for a person to pick), `noisy` (one OCR turn per image)
and `conversations` (OCR-grounded conversations from a teacher). The command is `cli/llavar.py`.
"""
