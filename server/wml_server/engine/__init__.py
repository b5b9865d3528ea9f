"""The stream engine: runs stream deployments (Kafka in, model, Kafka out), exactly once.

    engine = Engine(on_status_change=persist)            # or Engine(run_streams=False): accept only
    engine.start(StreamSpec(deployment_id, model, KafkaTopic("tweets", conn), KafkaTopic("scores", conn)))
    engine.status(deployment_id)   # StreamState(status, errors, records_in, records_out, records_errored,
                                   #             position, lag): memory only, no Kafka call
    engine.stop(deployment_id); engine.remove(deployment_id); engine.shutdown()

Independent of the REST layer: the API converts its wire models into `StreamSpec` / `KafkaEndpoint`.
"""

from wml_server.engine.engine import Engine
from wml_server.engine.metrics import EngineMetrics
from wml_server.engine.options import StreamOptions
from wml_server.engine.records import ScoredBatch, score_batch
from wml_server.engine.spec import KafkaEndpoint, KafkaTopic, StreamSpec
from wml_server.engine.state import FAILED, INITIALIZING, RUNNING, STOPPED, Errors, StatusCallback, StreamState

__all__ = [
    "FAILED", "INITIALIZING", "RUNNING", "STOPPED", "Engine", "EngineMetrics", "Errors", "KafkaEndpoint",
    "KafkaTopic", "ScoredBatch", "StatusCallback", "StreamOptions", "StreamSpec", "StreamState", "score_batch",
]
