"""rltf's sandboxed judge and rewards inside other trainers: ``trl`` (GRPOTrainer reward functions,
by object or by dotted path from TRL's CLI) and ``verl`` (``compute_score_batched`` for its batch
reward manager, ``compute_score`` for the per-response ones), both judging on the process's shared
pool (``judging``). Neither module imports its trainer."""
