"""Weights moving between sedjax's models and other toolkits' (desed_task: DESED_task's CRNN)."""
