"""The local platform: a real kube-apiserver with etcd, a real Kafka broker and a Spark cluster, on 127.0.0.1.

Used by the test fixtures (tests/conftest.py), `make platform-up` / `make platform-down` and `make demo`.
Binaries and jars come from the cache filled by hack/setup-platform.sh; nothing here downloads.
"""

from wml_localplatform.config import PlatformConfig
from wml_localplatform.kafka import KafkaBroker, KafkaInfo, KafkaUser
from wml_localplatform.kube import KubeControlPlane, KubeInfo
from wml_localplatform.spark import SparkCluster, SparkInfo

__all__ = ["KafkaBroker", "KafkaInfo", "KafkaUser", "KubeControlPlane", "KubeInfo", "PlatformConfig", "SparkCluster",
           "SparkInfo"]
