"""Engines: one interface (``base.InferenceEngine``) over transformers, vLLM and a fake engine."""
