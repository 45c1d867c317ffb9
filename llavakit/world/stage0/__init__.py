"""Stage 0 of the synthetic world: the "pretrained" parts that LLaVA takes for granted.

LLaVA starts from a pretrained CLIP vision encoder and a pretrained LLM. For the embedded world
these are trained here in a minute or two on a laptop CPU, with transformers' own classes, and
saved as standard Hugging Face folders, so stages 1 and 2 load them exactly as they would load
openai/clip-vit-large-patch14-336 and Vicuna:

- `train_tokenizer`: byte-level BPE with Llama's special tokens and BOS behaviour;
- `train_clip`: a tiny `CLIPModel` trained contrastively on image-caption pairs;
- `train_language_model`: a tiny `LlamaForCausalLM` trained on the world's text.
"""

from llavakit.world.stage0.clip import train_clip
from llavakit.world.stage0.lm import train_language_model
from llavakit.world.stage0.tokenizer import train_tokenizer

__all__ = ["train_clip", "train_language_model", "train_tokenizer"]
