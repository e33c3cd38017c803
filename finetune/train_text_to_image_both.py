#!/usr/bin/env python
"""Contrastive fine-tuning of the text encoder and the U-Net (loss 0.5·denoise + 0.1·lang + 0.4·vision) on enriched/ triplets.

Example:  accelerate launch finetune/train_text_to_image_both.py --pretrained_model_name_or_path tiny:sd \
              --train_data_dir runs/demo/enriched --output_dir runs/demo/models/both --max_train_steps 100
Weights, noise sharing, LoRA, EMA, checkpoints: see --help and DESIGN.md §2.
"""

from t2i_debias.cli import main_for_mode

if __name__ == "__main__":
    main_for_mode("both", __doc__)
