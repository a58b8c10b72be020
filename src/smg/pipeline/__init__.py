"""The request pipeline's stages, shared by every API front end:

``prepare`` (request -> chat template -> token ids, sampling, stops, constraints) -> ``run`` (one
engine stream through the choices, metrics, abort) -> ``choice`` (detokenizer -> stops -> reasoning
-> tools, per sequence); ``plain`` is the compiled fast path for a stream with no parsers.
"""
