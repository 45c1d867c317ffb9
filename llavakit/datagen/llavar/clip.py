"""A local CLIP folder as an image embedder and a zero-shot "is this image text-rich?" scorer.

LLaVAR clustered CLIP image features to find text-rich clusters, and CLIP's zero-shot prompts
give a second opinion next to the OCR score when filtering. Any Hugging Face CLIP folder works:
a full `CLIPModel` (image and text towers: embeddings and zero-shot scores), or a vision-only
`CLIPVisionModel` / `CLIPVisionModelWithProjection` (embeddings only), including the synthetic
world's stage-0 CLIP. Pixels are prepared from the folder's own `preprocessor_config.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

TEXT_RICH_PROMPTS = (
    "a photo of a poster with printed text",
    "a scanned page of a document",
    "a book cover with a title",
    "an advertisement with words on it",
    "a screenshot of a web page",
    "a sign with writing on it",
    "an infographic with labels and numbers",
    "a product label with text",
)
"""Zero-shot prompts for images whose content is mostly text (written for llavakit)."""
NATURAL_PROMPTS = (
    "a photo of a natural landscape",
    "a photo of an animal",
    "a photo of people",
    "a photo of food on a plate",
    "a photo of a room",
    "a photo of a street with cars",
    "a painting",
    "a photo of simple shapes",
)
"""Zero-shot prompts for images without text to read."""


@dataclass
class ClipModel:
    """A loaded CLIP folder; `has_text` is False when it has no usable text tower."""

    folder: Path
    model: Any
    image_config: Any
    tokenizer: Any | None
    device: torch.device

    @property
    def has_text(self) -> bool:
        return self.tokenizer is not None and hasattr(self.model, "get_text_features")

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> ClipModel:
        """Load a CLIP folder; the kind of model comes from its config, never from its name."""
        from transformers import (
            AutoConfig,
            AutoTokenizer,
            CLIPConfig,
            CLIPModel,
            CLIPVisionConfig,
            CLIPVisionModel,
            CLIPVisionModelWithProjection,
        )

        from llavakit.image_config import ImageProcessorConfig
        from llavakit.model.integrity import require_safetensors

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: not a model folder (no config.json)")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        require_safetensors(folder, "CLIP")  # a pickled .bin is refused, never read
        weights = {"local_files_only": True, "use_safetensors": True}
        tokenizer = None
        if isinstance(config, CLIPConfig):
            model = CLIPModel.from_pretrained(folder, **weights)
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError):
                tokenizer = None  # weights for both towers but no tokenizer files
        elif isinstance(config, CLIPVisionConfig):
            with_projection = "CLIPVisionModelWithProjection" in (config.architectures or [])
            model_class = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
            model = model_class.from_pretrained(folder, **weights)
        else:
            raise ValueError(
                f"{folder}: config model_type {config.model_type!r} is not a CLIP model "
                "(expected CLIPModel or CLIPVisionModel)"
            )
        image_config = ImageProcessorConfig.from_pretrained(folder)
        target = torch.device(device)
        return cls(folder, model.to(target).eval(), image_config, tokenizer, target)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        from llavakit.image import preprocess

        # "pad" keeps the whole image in view: text at the top of a poster is not cropped away.
        batch = np.stack([preprocess(image, self.image_config, aspect="pad") for image in images])
        return torch.from_numpy(batch).to(self.device)  # (n, 3, S, S)

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised image embeddings, float32 (n, d): CLIP's projected features when the
        folder has a projection, else the vision tower's pooled output."""
        pixels = self._pixels(images)
        if hasattr(self.model, "get_image_features"):
            output = self.model.get_image_features(pixel_values=pixels)
            features = getattr(output, "pooler_output", output)
        else:
            output = self.model(pixel_values=pixels)
            features = getattr(output, "image_embeds", None)
            if features is None:
                features = output.pooler_output
        features = torch.nn.functional.normalize(features.float(), dim=-1)  # (n, d)
        return features.cpu().numpy()

    @torch.no_grad()
    def text_rich_probability(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Zero-shot P(text-rich) per image, float32 (n,): softmax over all prompts of the
        image-prompt similarities, summed over the text-rich prompts."""
        if not self.has_text:
            raise ValueError(f"{self.folder}: this CLIP folder has no text model or tokenizer")
        prompts = list(TEXT_RICH_PROMPTS + NATURAL_PROMPTS)
        tokens = self.tokenizer(prompts, padding=True, return_tensors="pt").to(self.device)
        text_output = self.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
        )
        text = getattr(text_output, "pooler_output", text_output)
        text = torch.nn.functional.normalize(text.float(), dim=-1)  # (n_prompts, d)
        image = torch.from_numpy(self.embed_images(images)).to(self.device)  # (n, d)
        scale = self.model.logit_scale.exp().float()
        probabilities = (scale * image @ text.T).softmax(dim=-1)  # (n, n_prompts)
        return probabilities[:, : len(TEXT_RICH_PROMPTS)].sum(dim=-1).cpu().numpy()
