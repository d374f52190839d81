"""rltf's sandboxed judge and rewards inside other trainers: ``trl`` (GRPOTrainer reward functions)
and ``verl`` (a reward manager's ``compute_score``). Neither module imports its trainer."""
