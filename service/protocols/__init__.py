"""The protocols the service speaks beside its own API (the Open Inference Protocol, V2)."""
