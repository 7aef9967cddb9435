"""Pictures of what a model learned: the attention rollout (`rollout`) and the figures
(`figures`)."""
