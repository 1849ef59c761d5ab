"""Tracing: what the engine executed, recorded into a ``chipsim.trace.Trace`` (training steps and inference)."""
