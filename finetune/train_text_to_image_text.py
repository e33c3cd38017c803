#!/usr/bin/env python
"""Contrastive fine-tuning of the text encoder (loss 0.1·lang) on enriched/ triplets.

Example:  accelerate launch finetune/train_text_to_image_text.py --pretrained_model_name_or_path tiny:sd \
              --train_data_dir runs/demo/enriched --output_dir runs/demo/models/text --max_train_steps 100
Weights, noise sharing, LoRA, EMA, checkpoints: see --help and DESIGN.md §2.
"""

from t2i_debias.cli import main_for_mode

if __name__ == "__main__":
    main_for_mode("text", __doc__)
