"""Malformed records on the input topic of a running deployment: binary, invalid JSON, JSON that is not an
object, objects without text, records near Kafka's 1 MB limit. The stream keeps running and every record
comes out exactly once: scored, or with the error code that says why not (read_committed)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable

import requests
from confluent_kafka import Consumer, Producer

from tests.conftest import Figures
from tests.integration.test_wml_service_streams import _deploy, _wait_status
from tests.reliability.conftest import count
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform import KafkaInfo
from wml_localplatform.wmlservice import WMLService

NEAR_1MB = 1_040_000  # over the engine's 1,000,000-byte record limit, under the broker's default 1,048,588


def _kinds(rng: random.Random) -> dict[str, Callable[[int], bytes | None]]:
    return {
        "good": lambda i: json.dumps({"tweet": f"what a lovely day {i}"}).encode(),
        "binary": lambda i: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))),
        "invalid JSON": lambda i: b'{"tweet": "unterminated' + str(i).encode(),
        "not an object": lambda i: json.dumps([i, "tweet"]).encode(),
        "missing text": lambda i: json.dumps({"id": i, "tweet": None}).encode(),
        "empty": lambda i: b"",
        "null (tombstone)": lambda i: None,
        "1 MB": lambda i: json.dumps({"tweet": "x" * NEAR_1MB}).encode(),
    }


EXPECTED = {"good": None, "binary": "invalid_json", "invalid JSON": "invalid_json", "not an object": "not_an_object",
            "missing text": "missing_text", "empty": "invalid_json", "null (tombstone)": "invalid_json",
            "1 MB": "record_too_large"}


def test_malformed_records_are_each_accounted_for(wml_service: WMLService, kafka: KafkaInfo,
                                                  kafka_topic: Callable[..., str], figures: Figures) -> None:
    user = wml_service.add_user()
    api = WMLClient(wml_service.url, WMLCredentials(user.username, user.password), user.instance_id)
    source, target = kafka_topic("in", partitions=2), kafka_topic("out")
    did = _deploy(api, kafka, source, target)
    _wait_status(api, did, "RUNNING")

    rng = random.Random(20261127)  # noqa: S311 - test data, not crypto
    kinds = _kinds(rng)
    per_kind = count(200, 15)
    sent: dict[str, str] = {}  # key -> kind
    plan = [(kind, i) for kind in kinds for i in range(per_kind if kind != "1 MB" else max(3, per_kind // 10))]
    rng.shuffle(plan)
    producer = Producer(kafka.client_config(**{"message.max.bytes": 1_048_576, "linger.ms": 5}))
    for kind, i in plan:
        key = f"{kind}-{i}-{uuid.uuid4().hex[:6]}"
        producer.produce(source, kinds[kind](i), key.encode())
        sent[key] = kind
        producer.poll(0)
    assert producer.flush(60) == 0

    consumer = Consumer(kafka.client_config(**{
        "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest", "isolation.level": "read_committed",
        "fetch.max.bytes": 5_242_880, "max.partition.fetch.bytes": 1_048_576}))
    consumer.subscribe([target])
    outputs: Counter[str] = Counter()
    codes: dict[str, str | None] = {}
    deadline = time.monotonic() + 180
    while len(outputs) < len(sent) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        key = msg.key().decode()
        outputs[key] += 1
        codes[key] = json.loads(msg.value()).get("error")
    time.sleep(2)  # anything scored twice would arrive now
    while (msg := consumer.poll(0.5)) is not None:
        if not msg.error():
            outputs[msg.key().decode()] += 1
    consumer.close()

    assert api.get_instance_deployment(did).status == "RUNNING"
    missing = [k for k in sent if k not in outputs]
    twice = [k for k, n in outputs.items() if n > 1]
    wrong = {k: (sent[k], codes[k]) for k in sent if k in codes and codes[k] != EXPECTED[sent[k]]}
    assert missing == [], missing[:10]
    assert twice == [], twice[:10]
    assert wrong == {}, list(wrong.items())[:10]
    metrics = requests.get(f"{wml_service.url}/metrics", timeout=10).text
    assert f'wml_stream_records_in_total{{deployment_id="{did}"}} {float(len(sent))}' in metrics
    bad = sum(1 for kind in sent.values() if EXPECTED[kind])
    assert f'wml_stream_records_errored_total{{deployment_id="{did}"}} {float(bad)}' in metrics
    for kind in kinds:
        keys = [k for k, v in sent.items() if v == kind]
        figures.add("records", kind=kind, sent=len(keys), out=sum(outputs[k] for k in keys),
                    error_code=EXPECTED[kind] or "(scored)", missing=0, duplicated=0)
    api.delete_instance_deployment(did)
