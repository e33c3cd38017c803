#!/usr/bin/env python
"""Contrastive fine-tuning of the U-Net (loss 1.0·vision) on enriched/ triplets.

Example:  accelerate launch finetune/train_text_to_image_unet.py --pretrained_model_name_or_path tiny:sd \
              --train_data_dir runs/demo/enriched --output_dir runs/demo/models/unet --max_train_steps 100
Weights, noise sharing, LoRA, EMA, checkpoints: see --help and DESIGN.md §2.
"""

from t2i_debias.cli import main_for_mode

if __name__ == "__main__":
    main_for_mode("unet", __doc__)
