"""Users' models (issue 16: a model is untrusted code), each loaded and scored in a sandboxed process of its own."""

from wml_server.workers.model_worker import ModelLoadError, ModelWorker, ModelWorkerDied, Prediction

__all__ = ["ModelLoadError", "ModelWorker", "ModelWorkerDied", "Prediction"]
