"""One file per paper, each built on the Hugging Face classes, with a `paper` and a `tiny` config.

- `medblip.py`: `Blip2ForConditionalGeneration` (OPT) and the unfreeze-ratio trainable set.
- `common.py`: what they share: the tiny tokenizer, parameter counting, image preprocessing.
"""
