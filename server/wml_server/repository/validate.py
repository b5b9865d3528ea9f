"""The check that a version's content really loads: in a sandboxed worker, as its deployments will load it.

The upload is refused (and nothing stored) when the model does not load there: a corrupt pickle, a skops file
skops cannot read, a pickle whose loading fails inside the sandbox (e.g. it reaches for a file or the network).
"""

from __future__ import annotations

from wml_server.models.published import WorkerOptions
from wml_server.repository.frameworks import SKOPS, ContentError
from wml_server.repository.service import LoadCheck


def load_check(options: WorkerOptions) -> LoadCheck:
    def check(content_format: str, content: bytes, fields: list[str]) -> None:
        from wml_server.workers.model_worker import ModelLoadError, ModelWorker

        worker = ModelWorker(framework="skops" if content_format == SKOPS else "scikit-learn", content=content,
                             fields=fields, name="upload check", memory_limit_bytes=options.memory_limit_bytes,
                             load_timeout=options.load_timeout, predict_timeout=options.predict_timeout,
                             require_sandbox=options.require_sandbox)
        try:
            worker.start()
        except ModelLoadError as exc:
            code = exc.code if exc.code in ("model_sandbox_unavailable", "model_load_timeout") \
                else "invalid_model_content"
            raise ContentError(code, f"The model does not load: {exc.message}") from None
        finally:
            worker.close()

    return check
