"""Metrics, each computed the way the paper that reports it did (the docstrings say which way).

- `text`: MedBLIP's per-sample ROUGE / BLEU, the R2Gen corpus protocol (pycocoevalcap),
  nltk METEOR, closed-question accuracy, BERT-Sim.
- `clinical`: a rule-based CheXpert-style labeller and CE precision / recall / F1.
- `grounding`: box IoU (strict and MiniGPT-Med's lenient variant), Acc@0.5, RSNA mAP.
- `bootstrap`: 95% intervals and paired differences.
"""
