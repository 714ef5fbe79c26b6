"""Turn git history into contrastive pretraining data (bug-fix pairs and mutations)."""
