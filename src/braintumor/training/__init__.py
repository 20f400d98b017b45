"""Training: cached preprocessing, patch sampling, augmentation, losses, Trainer."""
