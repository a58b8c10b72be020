"""API request/response models (OpenAI Chat Completions and Completions)."""
