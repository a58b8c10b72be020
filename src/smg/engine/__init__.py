"""Engine side: serve any token generator over the engine gRPC contract (``EngineServer``), and a
CPU ``ReferenceEngine`` on top of it."""
from smg.engine.reference import ReferenceEngine
from smg.engine.server import EngineRequest, EngineServer, ScoredTokens

__all__ = ["EngineRequest", "EngineServer", "ReferenceEngine", "ScoredTokens"]
